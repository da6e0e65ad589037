# Who may run what on the console (FRAMING.md section 6), and the event codes the console reports.
# Roles are ordered: operator may do everything reader may, admin everything operator may.
from micropython import const

PUBLIC = const(0)      # before authentication
READER = const(1)
OPERATOR = const(2)
ADMIN = const(3)
ROLES = (READER, OPERATOR, ADMIN)
ROLE_NAMES = {PUBLIC: "none", READER: "reader", OPERATOR: "operator", ADMIN: "admin"}

SECRET = const(1)      # the request payload carries a secret: it must come encrypted (FLAG_ENC)
BUILTIN = const(2)     # answered by the console itself, not by an app handler

# Command codes. Public: 0x01..0x03; reader 0x10..; operator 0x20..; admin 0x30..
HELLO = const(0x01)
AUTH_BEGIN = const(0x02)
AUTH_FINISH = const(0x03)
LOGOUT = const(0x04)
SET_ROLE_KEY = const(0x34)

# code: (name, lowest role allowed, options)
COMMANDS = {
    HELLO: ("hello", PUBLIC, BUILTIN),
    AUTH_BEGIN: ("auth_begin", PUBLIC, BUILTIN),
    AUTH_FINISH: ("auth_finish", PUBLIC, BUILTIN),
    LOGOUT: ("logout", READER, BUILTIN),
    0x10: ("status", READER, 0),
    0x11: ("registers", READER, 0),
    0x12: ("software_id", READER, 0),
    0x13: ("export", READER, 0),
    0x14: ("event_log", READER, 0),
    0x20: ("set_time", OPERATOR, 0),
    0x21: ("calibration", OPERATOR, 0),
    0x22: ("set_interval", OPERATOR, 0),
    0x23: ("set_retention", OPERATOR, 0),
    0x24: ("set_power_fail", OPERATOR, 0),
    0x25: ("set_checkpoint", OPERATOR, 0),
    0x26: ("reboot", OPERATOR, 0),
    0x30: ("ota_begin", ADMIN, 0),
    0x31: ("ota_data", ADMIN, 0),
    0x32: ("ota_finish", ADMIN, 0),
    0x33: ("rotate_key", ADMIN, SECRET),
    SET_ROLE_KEY: ("set_role_key", ADMIN, SECRET | BUILTIN),
    0x35: ("set_mode", ADMIN, 0),
    0x36: ("factory_reset", ADMIN, 0),
    0x37: ("provision", ADMIN, SECRET),
}

CODES = {}
for _code, _entry in COMMANDS.items():
    CODES[_entry[0]] = _code
ROLE_CODES = {}
for _role, _name in ROLE_NAMES.items():
    ROLE_CODES[_name] = _role

# Events (on_event(code, role_name, detail)); the app seals them as event records.
EV_AUTH_OK = const(1)       # detail: "" (the role logged in)
EV_AUTH_FAILED = const(2)   # detail: "failures=N backoff_ms=M"
EV_ACTION = const(3)        # a privileged (operator or admin) command about to run; detail: its name
EV_ROLE_KEY = const(4)      # a role key was installed or erased; detail: "set <role>" / "erase all"
EVENT_NAMES = {EV_AUTH_OK: "auth_ok", EV_AUTH_FAILED: "auth_failed", EV_ACTION: "action",
               EV_ROLE_KEY: "role_key"}


def lookup(code):
    """(name, lowest role, options) of a command code, or None."""
    return COMMANDS.get(code)


def allowed(role, code):
    """May `role` (PUBLIC before authentication) run command `code`?"""
    entry = COMMANDS.get(code)
    return entry is not None and role >= entry[1]


def privileged(code):
    """Commands above the reader's level: each one is logged as an event naming the role."""
    entry = COMMANDS.get(code)
    return entry is not None and entry[1] > READER


def app_commands():
    """Names the app supplies handlers for (everything that is not built into the console)."""
    return [e[0] for e in COMMANDS.values() if not e[2] & BUILTIN]
