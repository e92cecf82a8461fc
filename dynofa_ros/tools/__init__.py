"""Command-line tools: offline stage, profiling, scenario bags, replay and reports."""
