"""Model definitions shared by cloud training, device training and export (torch)."""
