#!/bin/sh
# The native TypeScript compiler for the kernel's checker, in a session of its own: Jupyter interrupts a kernel by
# signalling its whole process group, and the compiler (which cancels its work on SIGINT) must outlive the
# interrupted cell. exec leaves no shell behind; tsgo exits when the kernel closes its pipe.
if command -v setsid >/dev/null 2>&1; then exec setsid "$SERVELAB_TSGO" "$@"; fi
exec "$SERVELAB_TSGO" "$@"
