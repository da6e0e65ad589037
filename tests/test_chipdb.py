"""host_tools/sim/chips.py is generated from the spiflash package: it must match a fresh generation."""
import spiflash
from spiflash import sfdp_tools
from meterctl import chipdb
from sim import chips


def test_chips_py_is_current():
    # Regenerates from the installed spiflash and compares with the committed file, byte for byte.
    assert chipdb.CHIPS_PY.read_text() == chipdb.render(), "run: .venv/bin/python -m meterctl.chipdb"
    assert chipdb.main(["--check"]) == 0


def test_models_agree_with_spiflash():
    for model, (name, jid) in zip(chips.CHIPS, chipdb.PARTS):
        (flash,) = spiflash.lookup(jid)
        assert model["name"] == name and name in flash.names
        assert model["jedec_id"] == flash.id
        assert model["size"] == flash.size and model["page_size"] == flash.page_size
        decoded = spiflash.parse_sfdp(model["sfdp"])
        assert decoded.warnings == ()
        assert decoded.size == flash.size
        assert decoded.bfpt.erase_4k_opcode == 0x20
        sizes = {e.opcode: e.size for e in decoded.bfpt.erase_types}
        assert sizes[0x20] == model["sector_size"] and sizes[0xD8] == model["block_size"]
        if decoded.bfpt.page_size is not None:
            assert decoded.bfpt.page_size == model["page_size"]


def test_a_real_dump_is_used_where_spiflash_has_one():
    # W25Q64JV: the database carries a BFPT dump (16 dwords, with the DW11 page size); the others are
    # encoded from the database (9 dwords, no page size), so the driver sees both kinds of table.
    by_name = {c["name"]: c for c in chips.CHIPS}
    assert "dump" in by_name["W25Q64JV"]["sfdp_source"]
    assert spiflash.parse_sfdp(by_name["W25Q64JV"]["sfdp"]).bfpt.page_size == 256
    assert by_name["W25Q64JV"]["sfdp"][16:] == spiflash.lookup("ef4017")[0].sfdp.table(0xFF00)
    enc = sfdp_tools.encode(spiflash.lookup("ef4018")[0]).data
    assert by_name["W25Q128JV"]["sfdp"] == enc
