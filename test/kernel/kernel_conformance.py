"""Jupyter messaging conformance of the servelab kernel: jupyter_kernel_test 0.4.5 plus ordering checks of our own.

Run from the repository root with the servelab kernelspec on JUPYTER_PATH (test/kernel/conformance.test.ts
sets up a scratch Jupyter home and does exactly this):

    /usr/bin/python3 test/kernel/kernel_conformance.py [-k PATTERN]

Not `python3 -m unittest test/kernel/...`: that imports `test.kernel...`, and Debian's standard library has a
package named `test` that wins.
"""
import atexit
import os
import re
import signal
import time
import unittest
from queue import Empty

import jupyter_kernel_test
from jupyter_kernel_test.msgspec_v5 import validate_message

# ---------------------------------------------------------------------------------------------------------------
# TENTATIVE: the display API a cell sees in its global scope, as kernel/display/display.ts and mime.ts define it
# while that code settles. Keep these aligned with it; every display sample below is built from them.
DISPLAY = 'display'  # display(value), display(bundle, {raw: true}), display(obj with a MIME method)
RAW = '{raw: true}'  # display()'s option: the first argument is a MIME bundle as is
MIME_METHOD = 'Symbol.for("servelab.mime")'  # obj[MIME_METHOD]() returns a MIME bundle (like _repr_mimebundle_)
CLEAR_OUTPUT = 'clearOutput'  # clearOutput(wait?: boolean) publishes clear_output
# Expected formats, also to align with the kernel: execute_result text/plain is util.inspect() of the value
# (as in Node's REPL), and a traceback names the line of the cell that threw.
TRACEBACK_LINE_2 = r'(\bline 2\b|:2:\d+)'
# ---------------------------------------------------------------------------------------------------------------

TIMEOUT = jupyter_kernel_test.TIMEOUT


def _interrupted(*_):
    # unittest records SystemExit as an error and carries on; KeyboardInterrupt stops the run, and the atexit
    # hook of setUpClass then shuts the kernel down.
    raise KeyboardInterrupt('SIGTERM')


# A killed run (the vitest timeout sends SIGTERM) still shuts its kernel down.
signal.signal(signal.SIGTERM, _interrupted)


class ServelabKernelTests(jupyter_kernel_test.KernelTests):
    kernel_name = 'servelab'
    language_name = 'typescript'
    file_extension = '.ts'
    protocol_version = '5.3'

    code_hello_world = 'console.log("hello, world")'
    code_stderr = 'console.error("oops")'

    # 'applied': the text once a match replaces [cursor_start, cursor_end); matches may be the member name alone
    # or the whole dotted name, so only test_completion_applies pins them down.
    completion_samples = [
        {'text': 'Math.ma', 'applied': 'Math.max'},
        {'text': 'console.lo', 'applied': 'console.log'},
    ]

    complete_code_samples = ['1 + 1', 'const x = 2;', 'function f() {\n  return 1;\n}']
    incomplete_code_samples = ['function f() {', 'const a = [1, 2,', 'console.log(1,']
    invalid_code_samples = ['const = ;', 'let 1x = 2;', '}']

    # No pager in TypeScript: test_pager is skipped.
    code_page_something = ''

    code_generate_error = 'throw new Error("boom")'
    error_ename = 'Error'
    error_evalue = 'boom'
    code_error_on_line_2 = 'const a = 1;\nthrow new Error("boom on line 2")'

    code_execute_result = [
        {'code': '6 * 7', 'result': '42'},
        {'code': '"servelab"', 'result': "'servelab'"},
        {'code': '[1, 2, 3].map((x) => x * 2)', 'result': '[ 2, 4, 6 ]'},
    ]
    # Glob, anchored (as IPython's history search): matches '6 * 7' above.
    code_history_pattern = '6 ? 7'
    supported_history_operations = ('tail', 'range', 'search')

    code_display_data = [
        {'code': f'{DISPLAY}({{"text/plain": "hi", "text/html": "<b>hi</b>"}}, {RAW})', 'mime': 'text/html'},
        {'code': f'{DISPLAY}({{ [{MIME_METHOD}]() {{ return {{"text/plain": "hi", "text/markdown": "**hi**"}}; }} }})',
         'mime': 'text/markdown'},
        {'code': f'{DISPLAY}(42)', 'mime': 'text/plain'},
    ]

    code_inspect_sample = 'Math.max'
    code_clear_output = f'{CLEAR_OUTPUT}()'

    # Output produced after an await must still come before the idle status.
    code_async_output = 'await new Promise((r) => setTimeout(r, 200));\nconsole.log("after await")'

    # -- kernel lifecycle ----------------------------------------------------------------------------------------

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        km = cls.km

        def shutdown():
            try:
                if km.is_alive():
                    km.shutdown_kernel(now=True)
            except Exception:
                pass

        atexit.register(shutdown)

    # -- helpers -------------------------------------------------------------------------------------------------

    def _reply(self, msg_id, timeout=TIMEOUT):
        """The shell reply to one request (replies to other requests are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f'no shell reply to {msg_id} within {timeout}s')
            try:
                msg = self.kc.get_shell_msg(timeout=left)
            except Empty:
                continue
            if msg['parent_header'].get('msg_id') == msg_id:
                return msg

    def _iopub(self, msg_id, timeout=TIMEOUT):
        """Every iopub message of one request, up to and including its idle status."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.fail(f'no idle status for {msg_id} within {timeout}s; got {[m["msg_type"] for m in msgs]}')
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except Empty:
                continue
            if msg['parent_header'].get('msg_id') != msg_id:
                continue
            validate_message(msg, msg['msg_type'], msg_id)
            msgs.append(msg)
            if msg['msg_type'] == 'status' and msg['content']['execution_state'] == 'idle':
                return msgs

    def _late(self, msg_id, wait=0.5):
        """iopub messages of a request that arrive after its idle status (clients would miss them)."""
        late = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                msg = self.kc.get_iopub_msg(timeout=left)
            except Empty:
                break
            if msg['parent_header'].get('msg_id') == msg_id:
                late.append(msg['msg_type'])
        return late

    def _execute(self, code, **kw):
        """Runs code; returns (reply, iopub messages up to idle)."""
        self.flush_channels()
        msg_id = self.kc.execute(code, **kw)
        reply = self._reply(msg_id)
        validate_message(reply, 'execute_reply', msg_id)
        return reply, self._iopub(msg_id)

    def _assert_status_frame(self, msgs, what):
        types = [m['msg_type'] if m['msg_type'] != 'status' else m['content']['execution_state'] for m in msgs]
        self.assertEqual(types[0], 'busy', f'{what}: the first iopub message must be status busy; got {types}')
        self.assertEqual(types[-1], 'idle', f'{what}: the last iopub message must be status idle; got {types}')
        self.assertEqual(types.count('busy'), 1, f'{what}: one busy status; got {types}')
        self.assertEqual(types.count('idle'), 1, f'{what}: one idle status; got {types}')

    # -- tests of our own ----------------------------------------------------------------------------------------

    def test_kernel_info_protocol(self):
        self.flush_channels()
        msg_id = self.kc.kernel_info()
        reply = self._reply(msg_id)
        validate_message(reply, 'kernel_info_reply', msg_id)
        content = reply['content']
        self.assertEqual(content.get('status'), 'ok', 'kernel_info_reply carries status ok')
        self.assertEqual(content['protocol_version'], self.protocol_version)
        self.assertEqual(content['language_info']['name'], self.language_name)

    def test_execute_input_before_outputs(self):
        reply, msgs = self._execute(self.code_hello_world)
        types = [m['msg_type'] for m in msgs]
        self.assertEqual(types[:2], ['status', 'execute_input'], f'busy, then execute_input; got {types}')
        ei = msgs[1]['content']
        self.assertEqual(ei['code'], self.code_hello_world)
        self.assertEqual(ei['execution_count'], reply['content']['execution_count'])
        self.assertIn('stream', types[2:-1], f'the output comes after execute_input; got {types}')

    def test_status_busy_idle_around_every_request(self):
        requests = {
            'kernel_info': lambda: self.kc.kernel_info(),
            'execute stdout': lambda: self.kc.execute(self.code_hello_world),
            'execute result': lambda: self.kc.execute(self.code_execute_result[0]['code']),
            'execute error': lambda: self.kc.execute(self.code_generate_error),
            'execute display': lambda: self.kc.execute(self.code_display_data[0]['code']),
            'execute after await': lambda: self.kc.execute(self.code_async_output),
            'complete': lambda: self.kc.complete(self.completion_samples[0]['text']),
            'inspect': lambda: self.kc.inspect(self.code_inspect_sample),
            'is_complete': lambda: self.kc.is_complete(self.incomplete_code_samples[0]),
            'history': lambda: self.kc.history(hist_access_type='tail', n=1, output=False, raw=True),
            'comm_info': lambda: self.kc.comm_info(),
        }
        for what, send in requests.items():
            with self.subTest(request=what):
                self.flush_channels()
                msg_id = send()
                reply = self._reply(msg_id)
                validate_message(reply, reply['msg_type'], msg_id)
                msgs = self._iopub(msg_id)
                self._assert_status_frame(msgs, what)
                self.assertEqual(self._late(msg_id), [], f'{what}: messages published after idle')

    def test_output_after_await_comes_before_idle(self):
        reply, msgs = self._execute(self.code_async_output)
        self.assertEqual(reply['content']['status'], 'ok')
        streams = [m for m in msgs if m['msg_type'] == 'stream' and m['content']['name'] == 'stdout']
        self.assertTrue(any('after await' in m['content']['text'] for m in streams),
                        f'stdout before idle; got {[m["msg_type"] for m in msgs]}')

    def test_error_reply_fields(self):
        reply, msgs = self._execute(self.code_generate_error)
        content = reply['content']
        self.assertEqual(content['status'], 'error')
        self.assertEqual(content['ename'], self.error_ename)
        self.assertIn(self.error_evalue, content['evalue'])
        self.assertIsInstance(content['traceback'], list)
        self.assertGreater(len(content['traceback']), 0)
        self.assertTrue(all(isinstance(t, str) for t in content['traceback']))
        self.assertIsInstance(content['execution_count'], int)
        errors = [m['content'] for m in msgs if m['msg_type'] == 'error']
        self.assertEqual(len(errors), 1, 'one error message on iopub')
        for key in ('ename', 'evalue', 'traceback'):
            self.assertEqual(errors[0][key], content[key], f'iopub error and execute_reply agree on {key}')

    def test_error_traceback_names_the_cell_line(self):
        reply, _ = self._execute(self.code_error_on_line_2)
        self.assertEqual(reply['content']['status'], 'error')
        text = re.sub(r'\x1b\[[0-9;]*m', '', '\n'.join(reply['content']['traceback']))
        self.assertRegex(text, TRACEBACK_LINE_2, 'the traceback points at line 2 of the cell')

    def test_is_complete_statuses(self):
        self.flush_channels()
        cases = [(c, 'complete') for c in self.complete_code_samples] \
            + [(c, 'incomplete') for c in self.incomplete_code_samples] \
            + [(c, 'invalid') for c in self.invalid_code_samples]
        for code, want in cases:
            with self.subTest(code=code):
                msg_id = self.kc.is_complete(code)
                reply = self._reply(msg_id)
                validate_message(reply, 'is_complete_reply', msg_id)
                self.assertEqual(reply['content']['status'], want, f'is_complete({code!r})')
                if want == 'incomplete':
                    self.assertIsInstance(reply['content'].get('indent'), str, 'an incomplete reply carries indent')

    def test_completion_applies(self):
        for sample in self.completion_samples:
            text = sample['text']
            with self.subTest(text=text):
                msg_id = self.kc.complete(text, len(text))
                reply = self._reply(msg_id)
                validate_message(reply, 'complete_reply', msg_id)
                c = reply['content']
                self.assertEqual(c['status'], 'ok')
                self.assertLessEqual(c['cursor_start'], c['cursor_end'])
                applied = {text[:c['cursor_start']] + m + text[c['cursor_end']:] for m in c['matches']}
                self.assertIn(sample['applied'], applied)

    def test_binds_loopback_only(self):
        self.assertEqual(self.km.ip, '127.0.0.1')
        pid = getattr(getattr(self.km, 'provisioner', None), 'pid', None)
        if pid is None or not os.path.isdir('/proc/net'):
            self.skipTest('kernel pid or /proc/net unavailable')
        listening = _listening_addresses(_process_tree(pid))
        self.assertGreater(len(listening), 0, 'the kernel listens on its five channels')
        self.assertEqual([a for a in listening if a not in _LOOPBACK], [], 'the kernel listens on loopback only')


_LOOPBACK = {'0100007F', '00000000000000000000000001000000', '0000000000000000FFFF00000100007F'}


def _process_tree(root):
    """root and its descendants, from /proc/*/stat."""
    children = {}
    for entry in os.listdir('/proc'):
        if entry.isdigit():
            try:
                with open(f'/proc/{entry}/stat') as f:
                    ppid = int(f.read().rsplit(')', 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def _listening_addresses(pids):
    """Local addresses (hex, as in /proc/net/tcp*) of the TCP sockets these processes listen on."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f'/proc/{pid}/fd'):
                m = re.match(r'socket:\[(\d+)\]', os.readlink(f'/proc/{pid}/fd/{fd}'))
                if m:
                    inodes.add(m.group(1))
        except OSError:
            continue
    found = []
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if cols[3] == '0A' and cols[9] in inodes:
                found.append(cols[1].split(':')[0])
    return found


if __name__ == '__main__':
    unittest.main(verbosity=2)
