/** A wrong invocation, path or input the user gave: the CLI prints the message and exits with code 2 (commander's own errors exit 2 too). */
export class UsageError extends Error {}
