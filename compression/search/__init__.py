"""Searching for a compression that meets a goal: candidates, measurement on a selection split, Pareto front."""
