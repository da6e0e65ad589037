# Boot stage (SLOTS.md section 6). With app slots: verify the active slot (manifest signature, pinned
# digest, every file's SHA-256) before importing anything from it, else boot the other slot and record
# tamper, else stay in a safe state that says why. Without slots (a development deploy by `meterctl
# deploy`): start the app at / as before, marked as an unverified development deploy.
# The verifier it uses (umeter.ota, umeter.crypto, the keystore backends, umeter.console) comes from the
# boot stage's own copy (frozen, or at /), never from a slot; that copy is dropped from sys.modules
# before the app loads.
# Production mode (console/MODE.md): decided first, from the MCU-internal mode blob at the port's keystore
# place (no board module, no app code). A locked board never gets the REPL back: it serves the console
# protocol, or in the safe state only the public line and a "safe state" error frame.
import micropython
micropython.kbd_intr(-1)  # first: no Ctrl-C during boot; development mode gives it back below
boot_error = None
safe_reason = None  # what the safe state's error frames say (public: never an exception's message)


def _boot_mode():
    try:
        from umeter.console import mode
    except ImportError:  # a boot stage without the console: development as before
        return None
    return mode.boot_load()


boot_mode = _boot_mode()


def _locked():
    return boot_mode is not None and boot_mode.locked


def _say(*args):
    # a locked board prints nothing: its line carries only console frames, and no reason leaks there
    if not _locked():
        print(*args)


def _failed(e):
    global boot_error, safe_reason
    boot_error = "%s: %s" % (type(e).__name__, e)
    safe_reason = "start failed (%s)" % type(e).__name__
    if not _locked():
        import sys
        print("umeter: start failed:")
        sys.print_exception(e)


def _has_slots(root):
    import os
    for name in ("slot_a", "slot_b"):
        try:
            os.stat(root + name)
            return True
        except OSError:
            pass
    return False


def _start(board, note):
    try:
        from umeter.console import mode
        ks = board.keystore()
        m = mode.load(ks.backend)
    except ImportError:  # an app without the console: development as before
        m = None
    except Exception:    # the keystore cannot be read: never open the REPL on that
        from umeter.console.mode import Mode, PRODUCTION
        m, ks = Mode(PRODUCTION, 0, True), None
    if (m is None or not m.locked) and boot_mode is not None and boot_mode.locked:
        m = boot_mode  # the port's keystore place says locked: locked wins
    if m is not None and m.locked:
        _production(board, m, ks)  # never returns (a reset ends it)
    micropython.kbd_intr(3)
    print(note)
    from umeter import app
    return app.start(board)


def _production(board, m, ks):
    import sys
    from umeter.console import serve
    from umeter.console.console import Console
    from umeter.console import handlers as hmod, mode
    serve.lock_repl()
    try:
        import machine
        reset = machine.reset
    except (ImportError, AttributeError):
        reset = sys.exit
    if m.mode == mode.RESETTING and ks is not None:
        mode.finish_reset(ks, board)
        reset()
    from umeter import app
    meter = h = None
    try:
        meter = app.start(board, background=False)
    except Exception:
        pass  # no meter: the console still answers (hello, login), so an admin can act
    if meter is not None:
        h = hmod.Handlers(meter, board, m, reset)
        backend = meter.keystore.backend if meter.keystore is not None else ks.backend
        sw = app.SOFTWARE_ID
    else:
        backend = ks.backend if ks is not None else board.keystore().backend
        sw = "umeter"
    serial = _serial()
    console = Console(backend, h.table() if h else {}, hmod.public_line(sw, serial, m.name),
                      h.on_event if h else None)

    def step():
        if h is not None:
            h.after()
        if meter is not None and not meter.step():
            import time
            time.sleep_ms(1)

    if h is not None:
        h.bind(console)
    while True:
        try:
            serve.serve(console, step=step)
        except SystemExit:  # machine.reset() on the virtual board
            raise
        except BaseException:
            pass
        if sys.platform == "linux":  # the unix port's line closed: end the process, never a prompt
            raise SystemExit(0)


def _safe_state(m, reason):
    """A locked board with no app to run: the REPL stays closed for good. The line answers hello with the
    public line and every other frame with a "safe state" error frame (serve.SafeConsole); a reset to
    the original state under way still wipes the keys. Never returns (the unix port: ends the process
    when its line closes)."""
    import sys
    try:
        from umeter.console import mode, serve
        serve.lock_repl()
        if m.mode == mode.RESETTING:
            try:
                from umeter.hal.keystore import KeyStore
                mode.finish_reset(KeyStore(mode.boot_backend()), None)  # the mode was read from it
            except Exception:
                pass  # the next boot tries again; the mode stays resetting
        console = serve.SafeConsole(("umeter|safe-state|%s|%s" % (_serial(), m.name)).encode(), reason)
    except BaseException:
        console = None  # no console code: silence rather than a prompt
    while True:
        try:
            if console is not None:
                serve.serve(console)
            else:
                import time
                time.sleep_ms(1000)
        except SystemExit:
            raise
        except BaseException:
            pass
        if sys.platform == "linux":  # the unix port's line closed: end the process, never a prompt
            raise SystemExit(0)


def _serial():
    try:
        import machine
        from binascii import hexlify
        return hexlify(machine.unique_id()).decode()
    except Exception:
        return "unknown"


def _development():
    global boot_error, safe_reason
    try:
        import board
    except ImportError:
        boot_error = safe_reason = "no board.py on this device"
        _say("umeter: no board.py on this device: run `meterctl deploy --board NAME --port PORT`")
        return None
    try:
        return _start(board, "umeter: unverified development deploy (no signed app slot)")
    except Exception as e:
        _failed(e)
        return None


def _boot():
    global boot_error, safe_reason
    import sys
    root = "" if sys.platform == "linux" else "/"  # the unix port's VfsPosix: relative paths only
    if not _has_slots(root):
        return _development()
    from umeter.ota import slots
    backend = slots.default_backend()
    try:
        index, m, mb = slots.select(root, backend)
    except slots.NeverInstalled:
        return _development()  # e.g. a first update was interrupted on a development deploy
    except slots.NoApp as e:
        boot_error = safe_reason = str(e)
        _say("umeter: safe state, no verified app to start:", boot_error)
        return None
    trial = slots.load(backend).trial
    for name in list(sys.modules):
        if name == "board" or name == "umeter" or name.startswith("umeter."):
            del sys.modules[name]
    sys.path.insert(0, slots.slot_dir(root, index))
    note = ("umeter: slot %s verified: app %s, security counter %d%s"
            % (slots.NAMES[index], m.version, m.counter, ", trial boot" if trial else ""))
    try:
        import board
        return _start(board, note)
    except Exception as e:
        _failed(e)
        slots.boot_failed(backend, index, boot_error)  # the boot stage's module object, not the slot's
        if trial and sys.platform != "linux":
            import machine
            machine.reset()  # the next boot uses up the next trial attempt, then rolls back
        return None


try:
    meter = _boot()
except Exception as _e:  # e.g. the filesystem: on a locked board still never a prompt
    meter = None
    _failed(_e)
    del _e
if _locked():  # only a failure returns here on a locked board (_production never returns)
    _safe_state(boot_mode, safe_reason or "no app started")
micropython.kbd_intr(3)  # development, or its safe state: the REPL as before
