"""The Slack app: ``/ato`` slash commands and the buttons of fired messages (see README "Slack")."""
