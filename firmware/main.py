# Boot stage: start the meter for the installed board.py. On failure it says why and leaves the REPL
# usable (development), so a bad deploy can be fixed over serial.
def _boot():
    try:
        import board
    except ImportError:
        print("umeter: no board.py on this device: run `meterctl deploy --board NAME --port PORT`")
        return None
    from umeter import app

    try:
        return app.start(board)
    except Exception as e:
        import sys

        print("umeter: start failed:")
        sys.print_exception(e)
        return None


meter = _boot()
