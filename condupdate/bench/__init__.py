"""The use-case scorecard: cases, baselines and ``condupdate bench``."""
