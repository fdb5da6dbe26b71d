"""The IPython faces: %pipecluster and %%pipestage, their parser, cluster and stage widgets,
text and HTML views.

May import every core layer; nothing imports it but the extension hooks in pipejupyter/__init__.
"""
