"""Mechanisms methods share, none of which imports a method: gradient projection against stored
subspaces (``subspace``), curriculum update rescaling (``curriculum``) and budgeted allocation
of new experts (``allocation``). A method hands them what they need through small interfaces."""
