"""The `luna` command in supervisorctl: `luna status [--json]`, `luna kill S`, `luna drain S`.

Loaded by etc/supervisord.conf:

    [ctlplugin:luna]
    supervisor.ctl_factory = daemon.supervisor.ctlplugin:make_luna_controllerplugin

supervisorctl dispatches a command word to the `do_<word>` method of any plugin, so the whole
command is `do_luna`, which reads its own sub-command. It calls the `luna.*` XML-RPC methods of
rpcinterface.py through supervisord and prints the result with statusview.py. Errors are printed
as one "ERROR: ..." line and set supervisorctl's exit status (7, LSB "not running", when lunad
or supervisord is down; 1 otherwise; 2 for a usage error), so scripts can test them.
"""

from __future__ import annotations

import json
import xmlrpc.client
from typing import Any

from supervisor.supervisorctl import ControllerPluginBase, LSBInitExitStatuses
from supervisor.xmlrpc import Faults

from daemon.supervisor.statusview import format_status

USAGE = ("luna status [--json]    servers, pool states, sessions and infra of lunad\n"
         "luna kill SESSION       end that session now (ids as in `luna status`)\n"
         "luna drain SERVER       stop new sessions of SERVER; current ones finish")
USAGE_ERROR_STATUS = 2


class LunaControllerPlugin(ControllerPluginBase):
    name = "luna"

    def do_luna(self, arg: str) -> None:
        words = arg.split()
        if words[:1] == ["status"] and words[1:] in ([], ["--json"]):
            self._status(as_json=words[1:] == ["--json"])
        elif len(words) == 2 and words[0] == "kill":
            self._call("kill", words[1], done=f"killed session {words[1]}")
        elif len(words) == 2 and words[0] == "drain":
            self._call("drain", words[1],
                       done=f"draining server {words[1]}: no new sessions, current ones finish")
        else:
            got = f"'luna {arg.strip()}'" if arg.strip() else "'luna' with no sub-command"
            self.ctl.output(f"ERROR: unknown command {got}; use one of:\n{USAGE}")
            self.ctl.exitstatus = USAGE_ERROR_STATUS

    def help_luna(self) -> None:
        self.ctl.output(USAGE)

    # -- helpers ------------------------------------------------------------------------------

    def _status(self, *, as_json: bool) -> None:
        ok, status = self._rpc("status")
        if ok:
            self.ctl.output(json.dumps(status, indent=2, sort_keys=True) if as_json
                            else format_status(status))

    def _call(self, method: str, name: str, *, done: str) -> None:
        ok, _ = self._rpc(method, name)
        if ok:
            self.ctl.output(done)

    def _rpc(self, method: str, *params: str) -> tuple[bool, Any]:
        try:
            return True, getattr(self.ctl.get_server_proxy("luna"), method)(*params)
        except xmlrpc.client.Fault as fault:
            self._fail(self._fault_text(fault, method))
            self.ctl.set_exitstatus_from_xmlrpc_fault(fault.faultCode)
        except OSError as exc:
            url = getattr(self.ctl.options, "serverurl", "its socket")
            self._fail(f"supervisord is not answering on {url} ({exc}); start it with "
                       "`systemctl start luna` or `supervisord -c <your supervisord.conf>`")
            self.ctl.exitstatus = LSBInitExitStatuses.NOT_RUNNING
        return False, None

    @staticmethod
    def _fault_text(fault: xmlrpc.client.Fault, method: str) -> str:
        if fault.faultCode == Faults.UNKNOWN_METHOD:
            return (f"supervisord has no luna.{method} method: its config lacks the "
                    "[rpcinterface:luna] section (see etc/supervisord.conf), or it was started "
                    "before that section was added (restart supervisord)")
        # supervisor prefixes the fault name ("FAILED: ..."); the message alone reads better.
        _, sep, message = fault.faultString.partition(": ")
        return message if sep else fault.faultString

    def _fail(self, message: str) -> None:
        self.ctl.output(f"ERROR: {message}")


def make_luna_controllerplugin(controller: Any, **config: str) -> LunaControllerPlugin:
    """supervisor.ctl_factory for `[ctlplugin:luna]` (the section has no options of its own)."""
    return LunaControllerPlugin(controller)
