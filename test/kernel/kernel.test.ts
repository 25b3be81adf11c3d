/** The kernel over its real protocol: a test client on zeromq against `servelab kernel start`. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { execSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { encode } from '../../kernel/protocol/message.ts';
import { TestClient } from './client.ts';

const types = (ms: { header: { msg_type: string } }[]) => ms.map((m) => m.header.msg_type);

describe('servelab kernel', () => {
  const k = new TestClient();
  beforeAll(() => k.start(), 60_000);
  afterAll(() => k.stop(), 30_000);

  it('answers kernel_info with the TypeScript language and protocol 5.3', async () => {
    const r = await k.request('kernel_info_request', {});
    expect(r.content).toMatchObject({ status: 'ok', protocol_version: '5.3', implementation: 'servelab', language_info: { name: 'typescript', file_extension: '.ts', mimetype: 'text/typescript' } });
  });

  it('publishes busy, execute_input, outputs, then idle, in that order', async () => {
    const { reply, outputs } = await k.execute("console.log('hello');\nconsole.error('careful');\n6 * 7");
    expect(reply.content).toMatchObject({ status: 'ok' });
    expect(types(outputs)).toEqual(['status', 'execute_input', 'stream', 'stream', 'execute_result', 'status']);
    expect(outputs[2].content).toEqual({ name: 'stdout', text: 'hello\n' });
    expect(outputs[3].content).toEqual({ name: 'stderr', text: 'careful\n' });
    expect(outputs[4].content).toMatchObject({ data: { 'text/plain': '42' }, execution_count: reply.content.execution_count });
  });

  it('type-checks a cell against earlier cells and lets a later cell redeclare a name', async () => {
    await k.execute("import { createDevice } from 'servelab';\nconst dev = await createDevice('reference');\nconst n = 3;");
    const bad = await k.execute("const s: string = n;\nconst t = dev.tensor([1, 2], [2], 'fp64');");
    expect(bad.reply.content.status).toBe('error');
    expect(bad.reply.content.ename).toBe('TypeScriptError');
    const tb = (bad.reply.content.traceback as string[]).join('\n');
    expect(tb).toMatch(/line 1, column 7: Type 'number' is not assignable to type 'string'/);
    expect(tb).toMatch(/line 2, column \d+: Argument of type '"fp64"' is not assignable/);
    const again = await k.execute("const n = 'three';\nn.toUpperCase()");
    expect(again.outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data).toEqual({ 'text/plain': "'THREE'" });
  });

  it('a name declared again with another type leaves the types of earlier cells that used it as they were', async () => {
    await k.execute('let series = [1, 2];');
    await k.execute('const head = series[0];');
    await k.execute("let series = ['a', 'b'];");
    const ok = await k.execute('const h: number = head;\nconst t: string = series[0];\nh');
    expect(ok.reply.content.status).toBe('ok');
    const bad = await k.execute('const hs: string = head;');
    expect((bad.reply.content.traceback as string[]).join('\n')).toMatch(/line 1, column 7: Type 'number' is not assignable to type 'string'/);
  });

  it('a value made in one cell from an earlier cell\'s import keeps its type in later cells', async () => {
    await k.execute("import { createDevice as makeDevice } from 'servelab';");
    const made = await k.execute("const dev2 = await makeDevice('reference');\nconst xs = Array.from([1, 2, 3]);");
    expect(made.reply.content.status).toBe('ok');
    const bad = await k.execute('const s: string = dev2.memory.live;\nconst t: string = xs[0];');
    expect(bad.reply.content.ename).toBe('TypeScriptError');
    const tb = (bad.reply.content.traceback as string[]).join('\n');
    expect(tb).toMatch(/line 1, column 7: Type 'number' is not assignable to type 'string'/);
    expect(tb).toMatch(/line 2, column 7: Type 'number' is not assignable to type 'string'/);
  });

  it('reports a runtime error with a traceback in the cell\'s own lines', async () => {
    const { reply, outputs } = await k.execute("function f(x: number) {\n  if (x > 1) throw new RangeError('too big: ' + x);\n  return x;\n}\n\nf(1) + f(2)");
    expect(reply.content).toMatchObject({ status: 'error', ename: 'RangeError', evalue: 'too big: 2' });
    const err = outputs.find((m) => m.header.msg_type === 'error')!;
    expect(err.content.traceback).toEqual([
      'RangeError: too big: 2',
      `    at f (cell[${reply.content.execution_count}] line 2)`,
      "      2 |   if (x > 1) throw new RangeError('too big: ' + x);",
      `    at <cell> (cell[${reply.content.execution_count}] line 6)`,
      '      6 | f(1) + f(2)',
    ]);
  });

  it('imports local .ts files and npm packages', async () => {
    const rel = join('test', 'kernel', 'fixtures', 'local_module.ts');
    const { reply, outputs } = await k.execute(`import { double } from './${rel}';\nimport { parse } from 'marked';\ndouble(21) + (typeof parse === 'function' ? 0 : 1)`);
    expect(reply.content.status).toBe('ok');
    expect(outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data).toEqual({ 'text/plain': '42' });
  });

  it('a notebook module that imports the engine gets the engine cells use (one Tensor class, not two)', async () => {
    const rel = join('test', 'kernel', 'fixtures', 'engine_user.ts');
    const { reply, outputs } = await k.execute(`import { createDevice as cd } from 'servelab';\nimport { isTensor } from './${rel}';\nconst dev9 = await cd('reference');\nisTensor(dev9.tensor([1, 2], [2]))`);
    expect(reply.content.status).toBe('ok');
    expect(outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data).toEqual({ 'text/plain': 'true' });
  });

  it('a type checker whose process dies is started again, and the next cell is checked against the earlier ones', async () => {
    await k.execute('const survivor = 7;');
    const tsgo = execSync(`pgrep -P ${k.proc.pid} tsgo`, { encoding: 'utf8' }).trim();
    process.kill(Number(tsgo), 'SIGKILL');
    const bad = await k.execute('const s9: string = survivor;');
    expect(bad.reply.content.ename).toBe('TypeScriptError');
    expect((bad.reply.content.traceback as string[]).join('\n')).toMatch(/Type 'number' is not assignable to type 'string'/);
    expect(execSync(`pgrep -P ${k.proc.pid} tsgo`, { encoding: 'utf8' }).trim()).not.toBe(tsgo);
  });

  it('a `using` declaration is checked, runs on Node 20 and is disposed when its cell ends', async () => {
    await k.execute("const disposals: string[] = [];\nconst resource = { [Symbol.dispose]() { disposals.push('done'); } };");
    const during = await k.execute('using held = resource;\ndisposals.length');
    expect(during.reply.content.status).toBe('ok');
    expect(during.outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data).toEqual({ 'text/plain': '0' });
    const after = await k.execute('disposals');
    expect(after.outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data).toMatchObject({ 'text/plain': "[ 'done' ]" });
  });

  it('interrupt_request stops a long engine experiment within a second, and the next cell runs clean', async () => {
    const code = [
      "import { createDevice, matmul } from 'servelab';",
      "const cpu = await createDevice('cpu');",
      'const m = cpu.empty([128, 128]);',
      "setInterval(() => console.log('tick from the interrupted cell'), 20);",
      'let steps = 0;',
      'for (;;) { (await matmul(m, m)).dispose(); steps++; }',
    ].join('\n');
    const req = k.request('execute_request', { code, silent: false, store_history: true, user_expressions: {}, allow_stdin: false }, 'shell', 20_000);
    await new Promise((r) => setTimeout(r, 1500));
    const t0 = Date.now();
    const ir = await k.request('interrupt_request', {}, 'control', 5000);
    expect(ir.content.status).toBe('ok');
    const reply = await req;
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(reply.content).toMatchObject({ status: 'error', ename: 'KeyboardInterrupt' });
    // The loop really stopped: its step counter no longer moves.
    const s1 = await k.execute('steps');
    await new Promise((r) => setTimeout(r, 300));
    const s2 = await k.execute('steps');
    const val = (o: Awaited<ReturnType<TestClient['execute']>>) => o.outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data;
    expect(val(s2)).toEqual(val(s1));
    // Nothing from the interrupted cell printed into the cells after it.
    for (const o of [...s1.outputs, ...s2.outputs]) expect(JSON.stringify(o.content)).not.toMatch(/tick from the interrupted cell/);
  }, 30_000);

  it('a runaway synchronous loop is interrupted by interrupt_request, and the heartbeat answers meanwhile', async () => {
    const req = k.request('execute_request', { code: 'while (true) {}', silent: false, store_history: true, user_expressions: {}, allow_stdin: false }, 'shell', 20_000);
    await new Promise((r) => setTimeout(r, 800));
    expect(await k.heartbeat()).toBe(true);
    await k.request('interrupt_request', {}, 'control', 5000);
    expect((await req).content.ename).toBe('KeyboardInterrupt');
    expect((await k.execute('1 + 1')).reply.content.status).toBe('ok');
  }, 30_000);

  it('SIGINT interrupts a runaway loop as well', async () => {
    const req = k.request('execute_request', { code: 'for (;;) {}', silent: false, store_history: true, user_expressions: {}, allow_stdin: false }, 'shell', 20_000);
    await new Promise((r) => setTimeout(r, 800));
    k.proc.kill('SIGINT');
    expect((await req).content.ename).toBe('KeyboardInterrupt');
    expect((await k.execute('2 + 2')).reply.content.status).toBe('ok');
  }, 30_000);

  it('an exception thrown in an async callback after the cell ended is shown under that cell; the kernel carries on', async () => {
    const { reply } = await k.execute("setTimeout(() => { throw new Error('late failure') }, 50);\n'scheduled'");
    expect(reply.content.status).toBe('ok');
    await new Promise((r) => setTimeout(r, 400));
    const late = k.iopubFor(reply.parent_header.msg_id!).filter((m) => m.header.msg_type === 'stream');
    expect(late.map((m) => m.content.text).join('')).toMatch(/Error: late failure/);
    expect((await k.execute('3 + 3')).reply.content.status).toBe('ok');
  });

  it('an output of many megabytes is truncated with a notice', async () => {
    const { reply, outputs } = await k.execute("for (let i = 0; i < 50; i++) console.log('x'.repeat(100_000));\n'done'");
    expect(reply.content.status).toBe('ok');
    const text = outputs.filter((m) => m.header.msg_type === 'stream').map((m) => m.content.text).join('');
    expect(text.length).toBeLessThan(1.1 * 2 ** 20);
    expect(text).toMatch(/output truncated after \d+ characters/);
  });

  it('ignores and logs a message with a wrong signature or a malformed one, then answers the next request', async () => {
    const forged = k.build('execute_request', { code: "console.log('forged')", silent: false });
    const frames = encode(forged, k.signer);
    frames[1] = Buffer.from('0'.repeat(64));
    await k.sendRaw(frames);
    await k.sendRaw([Buffer.from('<IDS|MSG>'), Buffer.from('x'), Buffer.from('not json')]);
    await k.sendRaw([Buffer.from('garbage')]);
    const r = await k.request('kernel_info_request', {});
    expect(r.content.status).toBe('ok');
    expect(k.iopubFor(forged.header.msg_id)).toEqual([]);
    // The log travels on the kernel's stderr pipe, which may arrive after the reply did.
    for (let i = 0; i < 40 && !/frames after the delimiter/.test(k.stderr); i++) await new Promise((r) => setTimeout(r, 50));
    expect(k.stderr).toMatch(/ignored a message on shell: bad signature/);
    expect(k.stderr).toMatch(/ignored a message on shell: .*(frames after the delimiter|delimiter)/);
  });

  it('answers complete, inspect, is_complete and history', async () => {
    const c = await k.request('complete_request', { code: 'Math.ma', cursor_pos: 7 });
    expect(c.content).toMatchObject({ status: 'ok', matches: ['max'], cursor_start: 5, cursor_end: 7 });
    const i = await k.request('inspect_request', { code: 'Math.max', cursor_pos: 8, detail_level: 0 });
    expect(i.content).toMatchObject({ status: 'ok', found: true });
    expect(String((i.content.data as Record<string, string>)['text/plain'])).toMatch(/max\(\.\.\.values: number\[\]\): number/);
    // The documentation comes from the declaration's comment in lib.es5.d.ts.
    expect(String((i.content.data as Record<string, string>)['text/plain'])).toContain('Returns the larger of a set of supplied numeric expressions.');
    for (const [code, status] of [['function f() {', 'incomplete'], ['const a = [1, 2,', 'incomplete'], ['1 + 1', 'complete'], ['const = ;', 'invalid']] as const) {
      expect((await k.request('is_complete_request', { code })).content.status, code).toBe(status);
    }
    const h = await k.request('history_request', { hist_access_type: 'tail', n: 2, output: false, raw: true });
    expect((h.content.history as unknown[]).length).toBe(2);
  });

  it('a syntax error is reported with its line, and the kernel carries on', async () => {
    const { reply } = await k.execute('const ok = 1;\nconst = ;');
    expect(reply.content).toMatchObject({ status: 'error', ename: 'TypeScriptError' });
    expect((reply.content.traceback as string[]).join('\n')).toMatch(/line 2, column 7: Variable declaration expected/);
    // The cell was refused whole, so nothing of it ran: its first line did not declare `ok` either.
    expect((await k.execute("typeof globalThis.ok")).outputs.find((m) => m.header.msg_type === 'execute_result')!.content.data).toEqual({ 'text/plain': "'undefined'" });
  });

  it('a comm target registered by a cell answers the frontend', async () => {
    const reg = await k.execute("lab.comms.registerTarget('echo', (comm, data) => {\n  comm.onMsg((d) => comm.send({ echoed: d }));\n  comm.send({ opened: data });\n});");
    expect(reg.reply.content.status).toBe('ok');
    const open = k.build('comm_open', { comm_id: 'e1', target_name: 'echo', data: { hello: 1 } });
    await k.send(open);
    await k.outputs(open.header.msg_id);
    expect(k.iopubFor(open.header.msg_id).find((m) => m.header.msg_type === 'comm_msg')?.content).toMatchObject({ comm_id: 'e1', data: { opened: { hello: 1 } } });
    const info = await k.request('comm_info_request', { target_name: 'echo' });
    expect(info.content.comms).toEqual({ e1: { target_name: 'echo' } });
    const msg = k.build('comm_msg', { comm_id: 'e1', data: { n: 2 } });
    await k.send(msg);
    await k.outputs(msg.header.msg_id);
    expect(k.iopubFor(msg.header.msg_id).find((m) => m.header.msg_type === 'comm_msg')?.content).toMatchObject({ data: { echoed: { n: 2 } } });
  });

  it('lists comms and closes a comm opened on an unknown target', async () => {
    const info = await k.request('comm_info_request', { target_name: 'nope' });
    expect(info.content).toMatchObject({ status: 'ok', comms: {} });
    const open = k.build('comm_open', { comm_id: 'c1', target_name: 'nope', data: {} });
    await k.sendRaw(encode(open, k.signer));
    await k.outputs(open.header.msg_id);
    const closed = k.iopubFor(open.header.msg_id).find((m) => m.header.msg_type === 'comm_close');
    expect(closed?.content).toMatchObject({ comm_id: 'c1' });
  });
});

describe('a kernel that dies', () => {
  it('killed by a signal, a pending request fails at once with the signal named, and stop() returns', async () => {
    const k = new TestClient();
    await k.start();
    try {
      const t0 = performance.now();
      const run = k.execute('await new Promise((r) => setTimeout(r, 60_000))');
      const failed = expect(run).rejects.toThrow(/the kernel exited \(SIGKILL\)/);
      k.proc.kill('SIGKILL');
      await failed;
      expect(performance.now() - t0).toBeLessThan(10_000);
      expect(k.exited).toBe(true);
    } finally {
      await k.stop();
    }
  }, 60_000);
});

describe('a kernel whose port is taken', () => {
  // The client chooses free ports and the kernel binds them later: another process may take one meanwhile.
  const BIN = join(import.meta.dirname, '..', '..', 'bin', 'servelab.js');
  const held = async () => {
    const s = createServer();
    await new Promise<void>((res) => s.listen(0, '127.0.0.1', res));
    return { server: s, port: (s.address() as { port: number }).port };
  };
  const startOn = async (taken: 'shell_port' | 'control_port' | 'hb_port') => {
    const dir = mkdtempSync(join(tmpdir(), 'servelab-taken-'));
    const servers = await Promise.all([held(), held(), held(), held(), held()]);
    const names = ['shell_port', 'iopub_port', 'stdin_port', 'control_port', 'hb_port'];
    const conn: Record<string, unknown> = { ip: '127.0.0.1', transport: 'tcp', key: 'k', signature_scheme: 'hmac-sha256' };
    names.forEach((n, i) => (conn[n] = servers[i].port));
    // Every port is released but the one under test.
    for (const [i, n] of names.entries()) if (n !== taken) await new Promise((r) => servers[i].server.close(r));
    writeFileSync(join(dir, 'connection.json'), JSON.stringify(conn));
    try {
      const r = spawnSync(process.execPath, [BIN, 'kernel', 'start', '-f', join(dir, 'connection.json')], { encoding: 'utf8', timeout: 30_000 });
      return { ...r, port: conn[taken] };
    } finally {
      servers[names.indexOf(taken)].server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  };

  it.each([
    ['shell_port', 'shell'],
    ['control_port', 'control'],
    ['hb_port', 'heartbeat'],
  ] as const)('exits at once with the %s named, instead of running without that channel', async (taken, channel) => {
    const r = await startOn(taken);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`servelab kernel start: cannot bind the ${channel} channel to tcp://127.0.0.1:${r.port}`);
    expect(r.stderr).toMatch(/Address already in use/);
  }, 60_000);
});
