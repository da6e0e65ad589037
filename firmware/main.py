# Boot stage (SLOTS.md section 6). With app slots: verify the active slot (manifest signature, pinned
# digest, every file's SHA-256) before importing anything from it, else boot the other slot and record
# tamper, else stay in a safe state that says why (the REPL stays usable). Without slots (a development
# deploy by `meterctl deploy`): start the app at / as before, marked as an unverified development deploy.
# The verifier it uses (umeter.ota, umeter.crypto, the keystore backends) comes from the boot stage's own
# copy (frozen, or at /), never from a slot; that copy is dropped from sys.modules before the app loads.
boot_error = None


def _has_slots(root):
    import os
    for name in ("slot_a", "slot_b"):
        try:
            os.stat(root + name)
            return True
        except OSError:
            pass
    return False


def _start(board):
    from umeter import app
    return app.start(board)


def _development():
    try:
        import board
    except ImportError:
        print("umeter: no board.py on this device: run `meterctl deploy --board NAME --port PORT`")
        return None
    print("umeter: unverified development deploy (no signed app slot)")
    try:
        return _start(board)
    except Exception as e:
        import sys
        print("umeter: start failed:")
        sys.print_exception(e)
        return None


def _boot():
    global boot_error
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
        boot_error = str(e)
        print("umeter: safe state, no verified app to start:", boot_error)
        return None
    trial = slots.load(backend).trial
    for name in list(sys.modules):
        if name == "board" or name == "umeter" or name.startswith("umeter."):
            del sys.modules[name]
    sys.path.insert(0, slots.slot_dir(root, index))
    print("umeter: slot %s verified: app %s, security counter %d%s"
          % (slots.NAMES[index], m.version, m.counter, ", trial boot" if trial else ""))
    try:
        import board
        return _start(board)
    except Exception as e:
        boot_error = "%s: %s" % (type(e).__name__, e)
        print("umeter: start failed:")
        sys.print_exception(e)
        slots.boot_failed(backend, index, boot_error)  # the boot stage's module object, not the slot's
        if trial and sys.platform != "linux":
            import machine
            machine.reset()  # the next boot uses up the next trial attempt, then rolls back
        return None


meter = _boot()
