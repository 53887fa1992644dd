"""The closed loop (#26): from staff corrections in the gateway's log to a better model in production, in one
resumable run: collect and mix → SFT → DPO/ORPO → export gate → promotion gate with the held-out corrections →
canary → promote or roll back (``steps.py`` has the order, ``run.py`` the runs and the schedule).

It sits above evaluation and training (it runs both) and below the benches and the CLI, which drive it."""

from helpline.improve.options import ImproveOptions, load_options
from helpline.improve.run import improve, run_every, runs_root, terminate_as_interrupt
from helpline.platform.durations import parse_duration

__all__ = [
    "ImproveOptions",
    "improve",
    "load_options",
    "parse_duration",
    "run_every",
    "runs_root",
    "terminate_as_interrupt",
]
