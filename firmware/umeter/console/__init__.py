# The production-mode command protocol (FRAMING.md): framing (frames on the wire), session (HMAC
# challenge-response, session MACs), roles (who may run what), rolekeys (role keys and back-off in
# MCU-internal storage), console (the device side: Console.feed), serve (the stdin/stdout loop).
