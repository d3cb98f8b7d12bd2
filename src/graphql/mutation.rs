//! Mutation resolvers: one call into `crate::auth` each.

use async_graphql::{Context, Object, ID};

use super::context::request;
use super::types::{AuthPayload, RegisterPayload, TotpEnrollment};
use crate::auth::Password;
use crate::error::AuthError;

pub struct Mutation;

#[Object]
impl Mutation {
    /// Exchange credentials for a new bearer token (one token per login: each device has its own).
    async fn login(
        &self,
        ctx: &Context<'_>,
        username: String,
        #[graphql(secret)] password: String,
        #[graphql(secret)] captcha: Option<String>,
    ) -> Result<AuthPayload, AuthError> {
        let request = request(ctx)?;
        let issued = request
            .auth
            .login(
                &username,
                &Password::new(&password),
                captcha.as_deref(),
                &request.client,
            )
            .await?;
        request.issued(&issued);
        Ok(issued.into())
    }

    /// Revoke the token that authenticated this request.
    async fn logout(&self, ctx: &Context<'_>) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        let out = request.auth.logout(&principal, &request.client).await?;
        request.signed_out();
        Ok(out)
    }

    /// Revoke every token of the signed-in user; returns how many were revoked.
    async fn logout_all(&self, ctx: &Context<'_>) -> Result<i32, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        let revoked = request.auth.logout_all(&principal, &request.client).await?;
        request.signed_out();
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    }

    /// Revoke every token of the signed-in user but the current one (sign out other devices); returns how many.
    async fn logout_others(&self, ctx: &Context<'_>) -> Result<i32, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        let revoked = request
            .auth
            .logout_others(&principal, &request.client)
            .await?;
        Ok(i32::try_from(revoked).unwrap_or(i32::MAX))
    }

    /// Revoke one of the signed-in user's sessions by id.
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        request
            .auth
            .revoke_session(&principal, &id, &request.client)
            .await
    }

    /// Change the password. Every token of the user is revoked and a fresh one is returned.
    async fn change_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] old_password: String,
        #[graphql(secret)] new_password: String,
    ) -> Result<AuthPayload, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        let issued = request
            .auth
            .change_password(
                &principal,
                &Password::new(&old_password),
                Password::new(&new_password),
                &request.client,
            )
            .await?;
        request.issued(&issued);
        Ok(issued.into())
    }

    /// Create an account (only while registration is open).
    async fn register(
        &self,
        ctx: &Context<'_>,
        username: String,
        email: String,
        #[graphql(secret)] password: String,
        #[graphql(secret)] captcha: Option<String>,
    ) -> Result<RegisterPayload, AuthError> {
        let request = request(ctx)?;
        let registered = request
            .auth
            .register(
                &username,
                &email,
                Password::new(&password),
                captcha.as_deref(),
                &request.client,
            )
            .await?;
        Ok(registered.into())
    }

    /// Confirm an email address with the token from the link mailed to it.
    async fn verify_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] token: String,
    ) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        request.auth.verify_email(&token, &request.client).await
    }

    /// Mail a fresh verification link to the signed-in user's unverified address.
    async fn resend_verification(&self, ctx: &Context<'_>) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        request
            .auth
            .resend_verification(&principal, &request.client)
            .await
    }

    /// Mail a password-reset link to the account with this address, if there is one. Always true.
    async fn request_password_reset(
        &self,
        ctx: &Context<'_>,
        email: String,
        #[graphql(secret)] captcha: Option<String>,
    ) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        request
            .auth
            .request_password_reset(&email, captcha.as_deref(), &request.client)
            .await
    }

    /// Set a new password with a reset token. Every session ends; a fresh token is returned.
    async fn reset_password(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] token: String,
        #[graphql(secret)] new_password: String,
    ) -> Result<AuthPayload, AuthError> {
        let request = request(ctx)?;
        let issued = request
            .auth
            .reset_password(&token, Password::new(&new_password), &request.client)
            .await?;
        Ok(issued.into())
    }

    /// Start changing the email address; it changes when the link mailed to the new address is followed.
    async fn change_email(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] password: String,
        new_email: String,
    ) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        request
            .auth
            .change_email(
                &principal,
                &Password::new(&password),
                &new_email,
                &request.client,
            )
            .await
    }

    /// Second step of a login for a user with two-factor sign-in: the challenge from the MFA_REQUIRED error and a TOTP code or a recovery code.
    async fn verify_mfa(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] challenge: String,
        #[graphql(secret)] code: String,
    ) -> Result<AuthPayload, AuthError> {
        let request = request(ctx)?;
        let issued = request
            .auth
            .verify_mfa(&challenge, &code, &request.client)
            .await?;
        request.issued(&issued);
        Ok(issued.into())
    }

    /// Begin TOTP enrolment; nothing changes until confirmTotp.
    async fn enroll_totp(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] password: String,
    ) -> Result<TotpEnrollment, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        let enrollment = request
            .auth
            .enroll_totp(&principal, &Password::new(&password), &request.client)
            .await?;
        Ok(enrollment.into())
    }

    /// Turn TOTP on with a first code; returns 10 single-use recovery codes, shown once.
    async fn confirm_totp(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] code: String,
    ) -> Result<Vec<String>, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        request
            .auth
            .confirm_totp(&principal, &code, &request.client)
            .await
    }

    /// Turn TOTP off, with the password and a TOTP code or a recovery code. Other sessions are signed out.
    async fn disable_totp(
        &self,
        ctx: &Context<'_>,
        #[graphql(secret)] password: String,
        #[graphql(secret)] code: String,
    ) -> Result<bool, AuthError> {
        let request = request(ctx)?;
        let principal = request.principal().await?;
        request
            .auth
            .disable_totp(
                &principal,
                &Password::new(&password),
                &code,
                &request.client,
            )
            .await
    }
}
