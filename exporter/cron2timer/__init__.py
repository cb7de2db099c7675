"""`tick-exporter cron2timer`: crontab entries -> systemd service + timer units.

conversion.py converts (parse.py reads the crontab, calendar.py the schedules, units.py
writes the units); command.py is the command. Nothing is imported here: the command
line of every other command names cron2timer's arguments (command.add_arguments) and
must not load the converter, shutil and its compression modules with them (~0.8 MiB
of a `run`'s RSS).
"""
