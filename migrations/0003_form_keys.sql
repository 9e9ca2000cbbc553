-- Schema 3: the form keys a session used (ClaimFormKey), so that a token
-- form resent to another instance makes no second token. The latest 32,
-- oldest first; form keys are random and say nothing of the secrets.
ALTER TABLE sessions ADD COLUMN form_keys text[] NOT NULL DEFAULT '{}';
