"""The flows: onboarding, the daily session and its checks, and the patient's own account."""
