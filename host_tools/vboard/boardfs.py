"""Boot stage of the virtual board: run by the MicroPython unix port as ``micropython boardfs.py``.

What a real board does at power-on, on the unix port (host side: meterctl/vboard.py):
1. Sandbox: the board directory (the board's internal filesystem) becomes ``/`` through
   ``vfs.VfsPosix(BOARD_DIR)``, so ``mpremote fs cp x :/x`` lands in it and never on the host's root.
   The host source trees on MICROPYPATH (firmware/, host_tools/, boards/sim) are mounted read-only at
   ``/.host0``, ``/.host1``, ... and put on sys.path after the board's own ``''`` and ``/lib``, so
   code deployed to the board overrides the repository's.
2. ``machine.reset()`` exists (the unix port lacks it): it ends the process with HARD_RESET_STATUS and
   the host boots the board again, running main.py, as after a power-on.
3. main.py runs in the REPL's global namespace (as on a real board) unless the host asks to skip it
   (a soft reset from the raw REPL skips main.py on real ports too). An exception in it is printed
   and the REPL starts anyway. For a meter that keeps running while mpremote talks to the REPL,
   main.py starts its loop with ``_thread.start_new_thread`` and returns.
4. Then the unix port's REPL starts (MICROPYINSPECT, set at the end: unlike ``-i`` it lets a
   SystemExit from main.py or from a failed sandbox end the process with its status, which the host
   treats as a soft reset, or as fatal for SANDBOX_FAILED_STATUS).

Environment (set by the host): UMETER_VB_DIR (board directory, required for the sandbox), UMETER_VB_PATH
(colon-separated host source trees to mount, in import order),
UMETER_VB_MAIN (a host path to a main script that replaces the board's main.py), UMETER_VB_SKIP_MAIN=1,
UMETER_VB_NO_SANDBOX=1 (keep the host filesystem, for debugging). MicroPython only.
"""

HARD_RESET_STATUS = 86
SANDBOX_FAILED_STATUS = 87  # the host reports it and does not boot again


def _host_dirs():
    import os
    return [d for d in (os.getenv("UMETER_VB_PATH") or "").split(":") if d]


def _exists(path):
    import os
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _sandbox(board_dir):
    import os
    import sys
    import vfs
    mounted = []
    for i, d in enumerate(_host_dirs()):
        mounted.append((d, "/.host%d" % i))
    vfs.umount("/")
    vfs.mount(vfs.VfsPosix(board_dir), "/")
    for host, point in mounted:
        vfs.mount(vfs.VfsPosix(host), point, readonly=True)
    os.chdir("/")
    sys.path[:] = ["", ".frozen", "/lib"] + [point for _, point in mounted]
    return mounted


def _install_machine_reset():
    import sys
    from vboard import vbmachine
    sys.modules["machine"] = vbmachine


def _default_main():
    """The board's own main.py, else the first main.py on the host source trees, or None."""
    import sys
    if _exists("main.py"):
        return "main.py"
    for d in sys.path:
        if d.startswith("/") and _exists(d + "/main.py"):
            return d + "/main.py"
    return None


def boot():
    import os
    board_dir = os.getenv("UMETER_VB_DIR")
    main_src = None
    custom = os.getenv("UMETER_VB_MAIN")
    if custom:
        # Read before the sandbox hides the host path.
        with open(custom) as f:
            main_src = f.read()
    if board_dir and not os.getenv("UMETER_VB_NO_SANDBOX"):
        try:
            _sandbox(board_dir)
        except Exception as e:  # never fall through to a REPL that writes to the host's files
            import sys
            sys.print_exception(e)
            sys.exit(SANDBOX_FAILED_STATUS)
    _install_machine_reset()
    if os.getenv("UMETER_VB_SKIP_MAIN"):
        return None
    if main_src is None:
        custom = _default_main()
        if custom is None:
            return None
        with open(custom) as f:
            main_src = f.read()
    return compile(main_src, custom, "exec")

if __name__ == "__main__":
    _umeter_vb_code = boot()
    if _umeter_vb_code is not None:
        try:
            exec(_umeter_vb_code)
        except SystemExit:
            raise
        except BaseException as _umeter_vb_exc:  # a real board prints it and still starts the REPL
            import sys as _umeter_vb_sys
            _umeter_vb_sys.print_exception(_umeter_vb_exc)
            del _umeter_vb_sys, _umeter_vb_exc
    import os as _umeter_vb_os
    _umeter_vb_os.putenv("MICROPYINSPECT", "1")  # read by the port when this script ends: start the REPL
    del _umeter_vb_os
    del _umeter_vb_code, boot, _sandbox, _install_machine_reset, _default_main, _exists, _host_dirs
    del HARD_RESET_STATUS, SANDBOX_FAILED_STATUS
