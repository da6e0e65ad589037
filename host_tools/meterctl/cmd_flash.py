"""``meterctl flash-micropython --board B --port P --firmware FILE [--erase]``: put MicroPython itself on a
board, before ``meterctl deploy``.

- ESP32 boards: the file must be an ESP32 firmware image (first byte 0xE9, the image's chip id is the
  board's chip); esptool writes it (``python -m esptool --chip esp32 --port P --baud 460800 write-flash -z
  0x1000 FILE``; esptool 5 spells the commands with dashes).
- RP2040 boards: the file must be a UF2 for the RP2040 (every 512-byte block carries the UF2 magic numbers
  and, when flagged, the RP2040 family id); the RP2040 is flashed from its BOOTSEL USB drive, so the
  command prints the steps.
- The virtual board runs on the unix port: nothing to flash.
The file is checked before anything else happens, so a wrong or corrupt file never reaches a board.
"""
import argparse
import struct
import subprocess
import sys
from pathlib import Path

from meterctl import boards
from meterctl.cli import CliError
from meterctl.remote import check_port

ESP_IMAGE_MAGIC = 0xE9
# ESP image header chip ids (esptool: IMAGE_CHIP_ID) and where MicroPython's image goes.
ESP_CHIPS = {"esp32": (0x0000, 0x1000), "esp32s2": (0x0002, 0x1000), "esp32s3": (0x0009, 0x0),
             "esp32c3": (0x0005, 0x0), "esp32c6": (0x000D, 0x0)}
ESP_CHIP_NAMES = {cid: name for name, (cid, _) in ESP_CHIPS.items()}
UF2_MAGIC0, UF2_MAGIC1, UF2_MAGIC_END = 0x0A324655, 0x9E5D5157, 0x0AB16F30
UF2_FLAG_FAMILY = 0x00002000
UF2_FAMILIES = {0xE48BFF56: "rp2040", 0xE48BFF59: "rp2350 (ARM)", 0xE48BFF5A: "rp2350 (RISC-V)",
                0x1C5F21B0: "esp32", 0xADA52840: "nrf52840"}
UF2_ABSOLUTE = (0xE48BFF57, 0xE48BFF58)   # rp2350 "absolute"/"data": not an RP2040 image either
ESPTOOL_BAUD = 460800


def register(subparsers):
    p = subparsers.add_parser("flash-micropython", help="write MicroPython itself to a board (esptool / UF2)",
                              description="ESP32 boards: write the MicroPython image with esptool. RP2040 "
                                          "boards: check the UF2 and print how to copy it in BOOTSEL mode.")
    p.add_argument("--board", help="board name (a directory under boards/)")
    p.add_argument("--port", help="serial port of an ESP32 board, e.g. /dev/ttyUSB0 (not needed for RP2040)")
    p.add_argument("--firmware", type=Path, help="MicroPython image: .bin for ESP32, .uf2 for RP2040")
    p.add_argument("--erase", action="store_true", help="ESP32: erase the whole flash first (fresh install)")
    p.add_argument("--baud", type=int, default=ESPTOOL_BAUD, help="esptool baud rate (default: %d)"
                   % ESPTOOL_BAUD)
    p.add_argument("--boards-dir", type=Path, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def read_firmware(path):
    if path is None:
        raise CliError("no firmware given: use --firmware FILE (a MicroPython .bin for ESP32, .uf2 for "
                       "RP2040, from https://micropython.org/download/)")
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise CliError("firmware %s is a directory, not an image file" % path) from None
    except OSError as e:
        raise CliError("cannot read firmware %s: %s" % (path, e.strerror or e)) from None
    if not data:
        raise CliError("firmware %s is empty" % path)
    return data


def uf2_family(data):
    """The UF2 family of the blocks, "" when not flagged; CliError-ready text when data is not a UF2."""
    if len(data) < 512 or len(data) % 512:
        return None, "its size (%d bytes) is not a multiple of 512-byte UF2 blocks" % len(data)
    families = set()
    nblocks = None
    for at in range(0, len(data), 512):
        m0, m1, flags, _addr, size, blockno, total, family = struct.unpack_from("<8I", data, at)
        end, = struct.unpack_from("<I", data, at + 508)
        if (m0, m1, end) != (UF2_MAGIC0, UF2_MAGIC1, UF2_MAGIC_END):
            return None, "block %d lacks the UF2 magic numbers" % (at // 512)
        if size > 476 or blockno >= total or (nblocks is not None and total != nblocks):
            return None, "block %d has an inconsistent header" % (at // 512)
        nblocks = total
        families.add(family if flags & UF2_FLAG_FAMILY else None)
    families.discard(None)
    if len(families) > 1:
        return None, "it mixes UF2 families %s" % ", ".join("0x%08x" % f for f in sorted(families))
    return (families.pop() if families else ""), None


def check_uf2(path, data):
    family, why = uf2_family(data)
    if why:
        hint = " (it looks like an ESP32 image)" if data[:1] == bytes([ESP_IMAGE_MAGIC]) else ""
        raise CliError("%s is not a valid UF2 file: %s%s" % (path, why, hint))
    if family and family != 0xE48BFF56:
        name = UF2_FAMILIES.get(family, "family 0x%08x" % family)
        if family in UF2_ABSOLUTE:
            name = "rp2350"
        raise CliError("%s is a UF2 for %s, not for the RP2040" % (path, name))
    return len(data) // 512


def check_esp_image(path, data, chip):
    if data[:1] != bytes([ESP_IMAGE_MAGIC]):
        what = " (it is a UF2 file, for RP2040 boards)" if uf2_family(data)[1] is None else ""
        raise CliError("%s is not an ESP32 firmware image: first byte 0x%02x, expected 0xE9%s"
                       % (path, data[0], what))
    if len(data) < 24:
        raise CliError("%s is too short for an ESP32 image header (%d bytes)" % (path, len(data)))
    segments, mode = data[1], data[2]
    if not 1 <= segments <= 16 or mode > 5:
        raise CliError("%s has a corrupt ESP32 image header (%d segments, flash mode %d)"
                       % (path, segments, mode))
    chip_id, = struct.unpack_from("<H", data, 12)
    want_id, offset = ESP_CHIPS.get(chip, (None, 0x1000))
    if want_id is not None and chip_id != want_id:
        raise CliError("%s is an image for %s (chip id %d), the board is an %s"
                       % (path, ESP_CHIP_NAMES.get(chip_id, "another chip"), chip_id, chip))
    return offset


def run_esptool(cmd):
    """Run esptool, its output going to the user's terminal; the exit status. Tests replace this."""
    return subprocess.run(cmd).returncode


def esptool_commands(chip, port, baud, offset, firmware, erase=False):
    """The esptool invocations, in order (esptool 5 spells its commands with dashes)."""
    base = [sys.executable, "-m", "esptool", "--chip", chip, "--port", port, "--baud", str(baud)]
    cmds = [base + ["erase-flash"]] if erase else []
    return cmds + [base + ["write-flash", "-z", "0x%x" % offset, str(firmware)]]


def run(args, out=None):
    out = out or sys.stdout
    board = boards.get(args.board, args.boards_dir)
    if board.chip is None:
        raise CliError("board %s is the virtual board: it runs on the MicroPython unix port, there is "
                       "nothing to flash (use `meterctl sim`)" % board.name)
    data = read_firmware(args.firmware)
    if board.chip.startswith("rp2"):
        blocks = check_uf2(args.firmware, data)
        return _rp2_instructions(board, args, blocks, out)
    if not board.chip.startswith("esp32"):
        raise CliError("board %s (chip %s): flashing MicroPython is not supported for this chip"
                       % (board.name, board.chip))
    offset = check_esp_image(args.firmware, data, board.chip)
    check_port(args.port)
    for cmd in esptool_commands(board.chip, args.port, args.baud, offset, args.firmware, args.erase):
        status = run_esptool(cmd)
        if status != 0:
            raise CliError("esptool %s failed with exit status %d (see its output above)%s"
                           % (cmd[9], status, "; the board may not hold a complete MicroPython, run the "
                              "command again" if cmd[9] == "write-flash" else ""))
    print("MicroPython written to %s (%d bytes at 0x%x). Next: meterctl deploy --board %s --port %s"
          % (args.port, len(data), offset, board.name, args.port), file=out)
    return 0


def _rp2_instructions(board, args, blocks, out):
    port = args.port or "/dev/ttyACM0"
    print("%s is a valid RP2040 UF2 (%d blocks). The RP2040 is flashed from its USB boot drive:" %
          (args.firmware, blocks), file=out)
    print("  1. Unplug the board, hold the BOOTSEL button, plug it in, release BOOTSEL.", file=out)
    print("  2. A USB drive named RPI-RP2 appears (Linux: /media/$USER/RPI-RP2, macOS: /Volumes/RPI-RP2).",
          file=out)
    print("  3. Copy the file to it: cp %s /media/$USER/RPI-RP2/ && sync" % args.firmware, file=out)
    print("  4. The board reboots into MicroPython by itself; its serial port is e.g. /dev/ttyACM0.",
          file=out)
    print("  5. Then: meterctl deploy --board %s --port %s" % (board.name, port), file=out)
    return 0
