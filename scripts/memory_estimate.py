"""Per-device training memory of a config on target machines, from `jax.eval_shape` on fake
CPU devices (nothing is allocated; see `recsys_jax/training/memory.py` for what is exact and
what is a formula).

    python scripts/memory_estimate.py configs/glm_10b_lora.yaml     # tpu_v4_32 and h100x8
    python scripts/memory_estimate.py configs/glm_10b_lora.yaml --target h100x8 mesh.fsdp=4

Prints one JSON object (per target: mesh, parameter counts, bytes per device by kind, the
device's memory and the headroom) and a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

# (devices, memory per device in GiB): JAX devices, i.e. chips (a v4 chip is one device).
TARGETS = {
    "tpu_v4_32": (16, 32.0),  # TPU v4-32 slice: 16 chips x 32 GiB HBM, 4 hosts
    "tpu_v5p_32": (16, 95.0),  # TPU v5p-32 slice: 16 chips x 95 GiB HBM, 4 hosts
    "h100x8": (8, 80.0),  # one 8 x H100 80 GB machine
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config", help="a recsys_jax YAML config (e.g. configs/glm_10b_lora.yaml)")
    parser.add_argument(
        "--target",
        action="append",
        choices=sorted(TARGETS),
        help="repeatable; default: tpu_v4_32 and h100x8",
    )
    parser.add_argument("overrides", nargs="*", help="section.key=value config overrides")
    args = parser.parse_args(argv)
    args.target = args.target or ["tpu_v4_32", "h100x8"]

    # Fake devices must be requested before jax is imported.
    most = max(TARGETS[t][0] for t in args.target)
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={most}"
    ).strip()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax

    from recsys_jax import sharding
    from recsys_jax.config import load_config
    from recsys_jax.training.memory import estimate

    cfg = load_config(args.config, args.overrides)
    results = {}
    for target in args.target:
        devices, memory_gib = TARGETS[target]
        mesh = sharding.make_mesh(
            cfg.mesh.data, cfg.mesh.fsdp, cfg.mesh.tensor, devices=jax.devices()[:devices]
        )
        result = estimate(cfg, mesh)
        result["device_memory_gib"] = memory_gib
        result["headroom_gib"] = round(memory_gib - result["gib_per_device"]["total"], 3)
        results[target] = result
    print(json.dumps(results, indent=2))

    kinds = list(next(iter(results.values()))["gib_per_device"])
    print("\n| GiB per device | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    print(
        "| mesh (data x fsdp x tensor) | "
        + " | ".join("{data} x {fsdp} x {tensor}".format(**r["mesh"]) for r in results.values())
        + " |"
    )
    print(
        "| micro-batch rows per device | "
        + " | ".join(str(r["micro_batch_rows_per_device"]) for r in results.values())
        + " |"
    )
    for kind in kinds:
        print(
            f"| {kind} | "
            + " | ".join(f"{r['gib_per_device'][kind]:.2f}" for r in results.values())
            + " |"
        )
    print(
        "| device memory | "
        + " | ".join(f"{r['device_memory_gib']:.0f}" for r in results.values())
        + " |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
