"""Network policy for pycni's Calico-style fabric.

Only the selector language lives here so far (:mod:`pycni.policy.selector`),
because IP pools (``nodeSelector``) and BGP peers already need it. The policy
model, label index, evaluator, nft renderer and manager arrive with the policy
engine (see DESIGN.md, "Fabric layout").
"""
