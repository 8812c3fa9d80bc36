"""The shop's Protocol Buffers: ``inventory.proto`` and the code ``scripts/gen_protos.py`` generates from it."""
