"""Pulumi components for the clusters the plan needs: cloud GPU (EKS), on-prem, and local control planes."""
