/** Progress of a long loop: rate over a recent window, and a log line with percentage and ETA. */
export class Progress {
  private readonly times: number[] = [];

  constructor(
    private readonly total: number,
    private readonly start: number,
    private readonly itemsPerStep: number,
    private readonly window = 20,
  ) {
    this.times.push(performance.now());
  }

  /** Marks one step done; returns items per second over the last `window` steps. */
  tick(): number {
    this.times.push(performance.now());
    if (this.times.length > this.window + 1) this.times.shift();
    return this.rate();
  }

  rate(): number {
    const n = this.times.length - 1;
    if (n === 0) return 0;
    return (n * this.itemsPerStep * 1000) / (this.times[n] - this.times[0]);
  }

  line(step: number, detail: string): string {
    const rate = this.rate();
    const left = ((this.total - step) * this.itemsPerStep) / Math.max(rate, 1e-9);
    const pct = this.total > this.start ? (100 * (step - this.start)) / (this.total - this.start) : 100;
    return `step ${step}/${this.total} ${pct.toFixed(0).padStart(3)}% | ${detail} | ${rate.toFixed(1)} img/s | ETA ${formatDuration(left)}`;
  }
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds)) return '?';
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, '0')}m` : `${m}m${String(s % 60).padStart(2, '0')}s`;
}
