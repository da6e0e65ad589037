# A stand-in for a port whose cryptolib has CTR (mode 6), for the unix port (which has none): mode 6 is
# built here from the real ECB, incrementing the whole 128-bit counter block as mbedtls does. Lets the
# tests run seal.py's native-CTR code path. Usage: mp_fake_ctr.install(seal).
import cryptolib as _real


class _Ctr6:
    def __init__(self, key, iv):
        self._ecb = _real.aes(key, 1)
        self._ctr = bytearray(iv)
        self._ks = bytearray(16)
        self._used = 16

    def _next_block(self):
        self._ecb.encrypt(self._ctr, self._ks)
        i = 15
        while i >= 0:
            self._ctr[i] = (self._ctr[i] + 1) & 0xFF
            if self._ctr[i]:
                break
            i -= 1
        self._used = 0

    def encrypt(self, data, out=None):
        res = bytearray(len(data)) if out is None else out
        if len(res) < len(data):
            raise ValueError("output too small")
        for i in range(len(data)):
            if self._used == 16:
                self._next_block()
            res[i] = data[i] ^ self._ks[self._used]
            self._used += 1
        return bytes(res) if out is None else None

    decrypt = encrypt


class FakeCryptolib:
    calls = 0

    @staticmethod
    def aes(key, mode, iv=None):
        if mode == 6:
            FakeCryptolib.calls += 1
            return _Ctr6(key, iv)
        return _real.aes(key, mode) if iv is None else _real.aes(key, mode, iv)


def install(seal_module):
    seal_module.cryptolib = FakeCryptolib
    seal_module.HAS_NATIVE_CTR = True
    return FakeCryptolib
