"""Compliance, patch-history, vulnerability and audit reports (CSV and PDF). Reads storage."""
