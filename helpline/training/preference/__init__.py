"""Preference tuning (DPO or ORPO with TRL) of a LoRA adapter on (prompt, chosen, rejected) pairs."""

from helpline.training.preference.config import PreferenceConfig, load_preference_config
from helpline.training.preference.pairs import read_pairs
from helpline.training.preference.trainer import train_preference

__all__ = ["PreferenceConfig", "load_preference_config", "read_pairs", "train_preference"]
