"""Run configuration of the demo and the summary printed at its end."""

from __future__ import annotations


def demo_run_config(profile: str = "demo") -> dict:
    """Sizes for a laptop CPU. Stages add their own op config here as they grow."""
    return {
        "ops": {},
        # The demo's terminal shows progress lines, not every engine event.
        "loggers": {"console": {"config": {"log_level": "INFO"}}},
    }


def print_summary(result, instance, elapsed: float) -> None:
    from collections import Counter

    mats = result.get_asset_materialization_events()
    per_asset = Counter(m.asset_key.to_user_string() for m in mats)
    status = "succeeded" if result.success else "FAILED"
    print(f"\nmain_job {status} in {elapsed:.0f} s (run {result.run_id})")
    for key, n in sorted(per_asset.items()):
        print(f"  {key:<32} {n:>3} materialization{'s' if n != 1 else ''}")
    checks = result.get_asset_check_evaluations()
    failed = [c for c in checks if not c.passed]
    print(f"  asset checks: {len(checks) - len(failed)} passed, {len(failed)} failed")
    for c in failed:
        print(f"    FAILED {c.asset_key.to_user_string()}:{c.check_name}")
    print(f"\nDagster instance: {instance.root_directory}  (open it with `make dev`)")
