#!/usr/bin/env bash
# A single-node Slurm cluster on localhost for the tests, everything under one directory:
#   slurm-cluster.sh start <dir>   munged, slurmctld and slurmd (as root) with a config and a fresh
#                                  munge key in <dir>; waits until the node is idle; prints the
#                                  path of slurm.conf (export it as SLURM_CONF)
#   slurm-cluster.sh stop <dir>    stops the three daemons (the directory is the caller's to remove)
# Needs Debian's slurmctld, slurmd, slurm-client and munge (bash scripts/setup.sh installs them).
set -euo pipefail
cmd=${1:?start or stop}
dir=$(realpath -m "${2:?directory}")
conf=$dir/slurm.conf

if [ "$cmd" = stop ]; then
  if [ -f "$conf" ]; then SLURM_CONF=$conf scontrol shutdown >/dev/null 2>&1 || true; fi
  for pidfile in "$dir/slurmctld.pid" "$dir/slurmd.pid" "$dir/munge/munged.pid"; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; kill "$pid" 2>/dev/null || true; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  exit 0
fi
[ "$cmd" = start ] || { echo "slurm-cluster.sh: start or stop, got '$cmd'" >&2; exit 2; }
for bin in munged slurmctld slurmd sbatch; do
  command -v "$bin" >/dev/null || { echo "slurm-cluster.sh: $bin is not installed (bash scripts/setup.sh installs Debian's slurm and munge, as root)" >&2; exit 1; }
done
[ "$(id -u)" = 0 ] || { echo "slurm-cluster.sh: the daemons run as root here" >&2; exit 1; }

mkdir -p "$dir"/{munge,state,spool,log}
chmod 700 "$dir/munge"
head -c 1024 /dev/urandom >"$dir/munge/munge.key"
chmod 400 "$dir/munge/munge.key"
munged --force --socket="$dir/munge/munge.sock" --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
  --log-file="$dir/log/munged.log" --seed-file="$dir/munge/munged.seed"

# Ports of its own, so that a cluster already running here is not disturbed. task/affinity binds
# each job to the CPUs it asked for (--cpus-per-task), as on a real cluster.
port=$((20000 + RANDOM % 20000))
node=$(hostname -s)
cat >"$conf" <<EOF
ClusterName=casmtest
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
SlurmctldPort=$port
SlurmdPort=$((port + 1))
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
NodeName=$node NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF=$conf
slurmctld -i
slurmd
for _ in $(seq 100); do
  if [ "$(sinfo -h -o %t 2>/dev/null)" = idle ]; then echo "$conf"; exit 0; fi
  sleep 0.2
done
echo "slurm-cluster.sh: the node did not come up within 20 s; logs in $dir/log" >&2
"$0" stop "$dir"
exit 1
