"""edgegen.distill: teacher -> compact student. One file per family; losses and student derivation shared."""
