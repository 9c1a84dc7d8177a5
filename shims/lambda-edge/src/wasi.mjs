// The WASI 0.2 surface a verge component still imports once wasi:nn is
// composed in: what Rust's standard library, QuickJS and CPython link, and no
// more authority than a device host grants. No filesystem (no preopens), no
// environment, no arguments, no network (sockets are denied); stdout and
// stderr go to the function's log as JSON lines. Everything is synchronous,
// as the transpiled component calls it.

import { getRandomValues } from 'node:crypto';

/** Values thrown from a `result`-returning import become its `err` payload. */
const closed = { tag: 'closed' };

class IoError {
  constructor(message) {
    this.message = message;
  }
  toDebugString() {
    return this.message;
  }
}

class Pollable {
  constructor(readyAt = 0n) {
    this.readyAt = readyAt;
  }
  ready() {
    return process.hrtime.bigint() >= this.readyAt;
  }
  block() {
    const wait = this.readyAt - process.hrtime.bigint();
    if (wait > 0n) sleepSync(Number(wait / 1_000_000n) + 1);
  }
}

/** A synchronous sleep: the component cannot yield to the event loop. */
function sleepSync(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

class InputStream {
  read() {
    throw closed;
  }
  blockingRead() {
    throw closed;
  }
  skip() {
    throw closed;
  }
  blockingSkip() {
    throw closed;
  }
  subscribe() {
    return new Pollable();
  }
}

class OutputStream {
  constructor(name, log) {
    this.name = name;
    this.log = log;
    this.pending = '';
  }
  checkWrite() {
    return 1n << 20n;
  }
  write(bytes) {
    this.pending += Buffer.from(bytes).toString('utf8');
    let nl;
    while ((nl = this.pending.indexOf('\n')) >= 0) {
      this.log(this.name, this.pending.slice(0, nl));
      this.pending = this.pending.slice(nl + 1);
    }
  }
  blockingWriteAndFlush(bytes) {
    this.write(bytes);
    this.flush();
  }
  flush() {
    if (this.pending) this.log(this.name, this.pending);
    this.pending = '';
  }
  blockingFlush() {
    this.flush();
  }
  writeZeroes(n) {
    this.write(new Uint8Array(Number(n)));
  }
  blockingWriteZeroesAndFlush(n) {
    this.blockingWriteAndFlush(new Uint8Array(Number(n)));
  }
  splice() {
    throw closed;
  }
  blockingSplice() {
    throw closed;
  }
  subscribe() {
    return new Pollable();
  }
}

function randomBytes(len) {
  const out = new Uint8Array(Number(len));
  // getRandomValues fills at most 65536 bytes per call.
  for (let i = 0; i < out.length; i += 65536) {
    getRandomValues(out.subarray(i, Math.min(out.length, i + 65536)));
  }
  return out;
}

function randomU64() {
  return new DataView(randomBytes(8).buffer).getBigUint64(0, true);
}

class Descriptor {}
class DirectoryEntryStream {}
class TerminalInput {}
class TerminalOutput {}

// wasi:sockets, which CPython's component (componentize-py) imports: there
// is a network handle, and every socket or name lookup is denied, as on a
// device host that grants no network.
class Network {}
class TcpSocket {}
class UdpSocket {}
class IncomingDatagramStream {}
class OutgoingDatagramStream {}
class ResolveAddressStream {}
const denied = () => {
  throw 'access-denied';
};

/**
 * The WASI imports, keyed as the transpiled component asks for them
 * (unversioned interface names). `log(stream, line)` receives component output.
 */
export function wasiImports(log) {
  const stdout = new OutputStream('stdout', log);
  const stderr = new OutputStream('stderr', log);
  return {
    'wasi:cli/environment': {
      getEnvironment: () => [],
      getArguments: () => [],
      initialCwd: () => undefined,
    },
    'wasi:cli/exit': {
      exit(status) {
        // A component has no process to end: treat it as a trap.
        throw new Error(`component called exit (${status?.tag ?? status})`);
      },
    },
    'wasi:cli/stdin': { getStdin: () => new InputStream() },
    'wasi:cli/stdout': { getStdout: () => stdout },
    'wasi:cli/stderr': { getStderr: () => stderr },
    'wasi:cli/terminal-input': { TerminalInput },
    'wasi:cli/terminal-output': { TerminalOutput },
    'wasi:cli/terminal-stdin': { getTerminalStdin: () => undefined },
    'wasi:cli/terminal-stdout': { getTerminalStdout: () => undefined },
    'wasi:cli/terminal-stderr': { getTerminalStderr: () => undefined },
    'wasi:clocks/monotonic-clock': {
      now: () => process.hrtime.bigint(),
      resolution: () => 1n,
      subscribeInstant: (when) => new Pollable(when),
      subscribeDuration: (d) => new Pollable(process.hrtime.bigint() + d),
    },
    'wasi:clocks/wall-clock': {
      now() {
        const ms = Date.now();
        return { seconds: BigInt(Math.floor(ms / 1000)), nanoseconds: (ms % 1000) * 1_000_000 };
      },
      resolution: () => ({ seconds: 0n, nanoseconds: 1_000_000 }),
    },
    'wasi:filesystem/preopens': { getDirectories: () => [] },
    'wasi:filesystem/types': {
      Descriptor,
      DirectoryEntryStream,
      filesystemErrorCode: () => undefined,
    },
    'wasi:io/error': { Error: IoError },
    'wasi:io/poll': {
      Pollable,
      poll(list) {
        for (;;) {
          const ready = [];
          list.forEach((p, i) => p.ready() && ready.push(i));
          if (ready.length) return new Uint32Array(ready);
          list.reduce((a, p) => (p.readyAt < a.readyAt ? p : a)).block();
        }
      },
    },
    'wasi:io/streams': { InputStream, OutputStream },
    'wasi:random/random': { getRandomBytes: randomBytes, getRandomU64: randomU64 },
    'wasi:random/insecure': {
      getInsecureRandomBytes: randomBytes,
      getInsecureRandomU64: randomU64,
    },
    'wasi:random/insecure-seed': { insecureSeed: () => [randomU64(), randomU64()] },
    'wasi:sockets/instance-network': { instanceNetwork: () => new Network() },
    'wasi:sockets/network': { Network },
    'wasi:sockets/tcp': { TcpSocket },
    'wasi:sockets/tcp-create-socket': { createTcpSocket: denied },
    'wasi:sockets/udp': { UdpSocket, IncomingDatagramStream, OutgoingDatagramStream },
    'wasi:sockets/udp-create-socket': { createUdpSocket: denied },
    'wasi:sockets/ip-name-lookup': { ResolveAddressStream, resolveAddresses: denied },
  };
}
