"""`kiln demo`: the real operator against an in-process API emulator with simulated GPU nodes."""
