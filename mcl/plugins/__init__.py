"""Continual-learning plugins: regularisers and rehearsal that attach to any trainable method.

A method (``mcl.methods``) owns its modules, experts and routing; a plugin adds one mechanism on
top (a penalty, a distillation term, a replay buffer) through a small fixed hook list
(:class:`mcl.plugins.base.Plugin`). ``method.plugins`` in the config lists them; names resolve
to ``conf/plugin/<name>.yaml`` (:mod:`mcl.plugins.registry`). See docs/plugins.md.
"""
