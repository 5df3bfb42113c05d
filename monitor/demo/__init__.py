"""The demo workspace: real digits (scikit-learn), a pre-trained small CNN, drifting snapshots."""

from ._workspace import DEMO_DATASETS, DEMO_TASKS, DemoDataset, DemoFeed, build_demo, publish_snapshot

__all__ = ["DEMO_DATASETS", "DEMO_TASKS", "DemoDataset", "DemoFeed", "build_demo", "publish_snapshot"]
