# Signed updates (BUNDLE.md): bundle.py parses and builds the format; the installer, the slots and the
# boot-stage verification live in their own modules. Kept free of imports so `umeter.ota.bundle` loads alone
# (the boot stage and CPython host tools import it without the rest of the app).
