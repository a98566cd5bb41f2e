"""Agents: a language model that acts, by calling tools and reading what they return.

- :mod:`~tinylm.agents.calculator` a safe calculator: arithmetic parsed with ``ast``, never
  ``eval``, with limits so that no expression can hang or exhaust memory
- :mod:`~tinylm.agents.tools`      tools the model may call (the calculator, search over the book),
  the tool-call format and its parser; errors become observations
- :mod:`~tinylm.agents.react`      the ReAct loop (think, act, observe) with a step limit and a
  readable transcript; decoding constrained so every action parses as a tool call
- :mod:`~tinylm.agents.tasks`      development and held-out tasks (word problems, look-ups in the book)
  with checkable answers; success with and without tools; an instruction planted in a retrieved chunk
"""
