"""edgegen.export: checkpoints -> bundles an app embeds, one file per target and technique."""
