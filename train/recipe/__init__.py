"""The transfer-learning recipe: ``trainer.Trainer`` runs the phases (``fresh_phases``, ``cached_phases``)
through ``fitting``; ``budget`` measures candidates and ``planner`` picks the plan for a time budget;
``presets`` holds the named option sets; ``plots`` draws the run's figures.

``edgebench.train.model`` stays one level up: the portable path, the reference runner, packing and export
build or load the network too, and saved models name that module."""
