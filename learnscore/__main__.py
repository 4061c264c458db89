from learnscore.cli import run

run()
