"""Tandem protocol packages."""
