"""Luna's extension of supervisord: `supervisorctl luna status|kill|drain`.

Two halves, loaded by sections of etc/supervisord.conf:

- rpcinterface.py (`[rpcinterface:luna]`) runs INSIDE supervisord. Its XML-RPC methods
  `luna.status`, `luna.kill` and `luna.drain` forward to lunad's control socket. supervisord is
  one single-threaded select loop, so a request never blocks it for long: exchange.py speaks the
  control protocol on a non-blocking socket and a slow answer is polled as a supervisor
  "deferred" response.
- ctlplugin.py (`[ctlplugin:luna]`) runs inside supervisorctl: it adds the `luna` command, calls
  those XML-RPC methods and prints the answer with statusview.py's pure formatting.

Errors keep their meaning across the hop: lunad unreachable is fault NOT_RUNNING, a request lunad
refused (unknown session or server) is fault FAILED carrying lunad's own message.
"""
