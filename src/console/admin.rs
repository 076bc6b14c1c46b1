//! The admin screens: people (add, change a role, disable and enable, sign out
//! everywhere), API tokens (create, shown once; revoke; usable or refused on the API at
//! once, without a restart) and the audit log (through the API's own handler). Admin only;
//! every change is audited as the signed-in admin, from their address.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use minijinja::context;
use serde::Deserialize;

use super::{local_time, message, page, refused, role_label, Lang, Signed};
use crate::api::auth::{Role, Source};
use crate::api::problem::Problem;
use crate::api::SharedState;
use crate::store::people;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/people", get(people_page).post(add_person))
        .route("/people/{action}", post(act_on_person))
        .route("/tokens", get(tokens_page).post(create_token))
        .route("/tokens/revoke", post(revoke_token))
        .route("/audit", get(audit_page))
}

const ROLES: [Role; 4] = [Role::Viewer, Role::Staff, Role::Disaster, Role::Admin];

fn roles(lang: Lang) -> Vec<minijinja::Value> {
    ROLES
        .iter()
        .map(|r| context! { value => r.as_str(), label => role_label(r.as_str(), lang) })
        .collect()
}

/// A refusal shown at its form field: (field, status, text).
type FieldError = (&'static str, StatusCode, String);

fn field_error(field: &'static str, status: StatusCode, text: &str) -> FieldError {
    (field, status, text.to_string())
}

/// The checks of every admin form: the role first, then the session's CSRF token.
fn admin_form(signed: &Signed, csrf: &str) -> Result<(), Response> {
    signed.require(Role::Admin)?;
    signed.check_csrf(csrf)
}

/// A 404 page: what was not found, in the user's language.
fn not_found(lang: Lang, (ja, en): (&str, &str)) -> Response {
    message(
        lang,
        StatusCode::NOT_FOUND,
        lang.pick("見つかりません", "Not found"),
        lang.pick(ja, en),
    )
}

/// The admin's change, in the audit log: the route, and what it was done to.
fn audit_change(state: &SharedState, signed: &Signed, route: &str, details: &[(&str, &str)]) {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in details {
        q.append_pair(k, v);
    }
    signed.audit(state, &format!("{route}?{}", q.finish()), 303);
}

// ---------------------------------------------------------------------------------------
// People

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PeopleQuery {
    done: String,
}

/// `GET /people`: every user with their role and state, what can be done to each, and the
/// form that adds one.
pub async fn people_page(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<PeopleQuery>,
) -> Response {
    if let Err(r) = signed.require(Role::Admin) {
        return r;
    }
    let lang = signed.lang;
    let done = match q.done.as_str() {
        "added" => Some(lang.pick("利用者を追加しました。", "The user was added.")),
        "role" => Some(lang.pick("権限を変更しました。", "The role was changed.")),
        "disabled" => Some(lang.pick(
            "利用者を無効にし、ログイン中の画面をすべて終了しました。",
            "The user was disabled and signed out everywhere.",
        )),
        "enabled" => Some(lang.pick("利用者を有効に戻しました。", "The user was enabled again.")),
        "signed_out" => Some(lang.pick(
            "すべての端末からログアウトさせました。",
            "The user was signed out everywhere.",
        )),
        _ => None,
    };
    people_view(
        &state,
        &signed,
        &AddPerson::default(),
        None,
        done,
        StatusCode::OK,
    )
    .await
}

async fn people_view(
    state: &SharedState,
    signed: &Signed,
    form: &AddPerson,
    error: Option<FieldError>,
    done: Option<&str>,
    status: StatusCode,
) -> Response {
    let lang = signed.lang;
    let now = crate::clock::now_ms();
    let found = people::people(&state.db, now - super::IDLE_MS, now - super::ABSOLUTE_MS).await;
    let found = match found {
        Ok(p) => p,
        Err(e) => return refused(lang, &Problem::from(e)),
    };
    let list: Vec<minijinja::Value> = found
        .iter()
        .map(|p| {
            context! {
                name => p.name, role => p.role, role_label => role_label(&p.role, lang),
                disabled => p.disabled, sessions => p.sessions,
                created => local_time(p.created_at, lang),
                me => p.name == signed.caller.name,
            }
        })
        .collect();
    let (error_field, error_status, error) = match error {
        Some((f, s, e)) => (Some(f), s, Some(e)),
        None => (None, status, None),
    };
    let mut r = page(
        "people.html",
        lang,
        context! {
            me => signed.header(), people => list, roles => roles(lang), done => done,
            name => form.name, role => if form.role.is_empty() { "staff" } else { form.role.as_str() },
            error => error, error_field => error_field,
        },
    );
    *r.status_mut() = error_status;
    r
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AddPerson {
    csrf: String,
    name: String,
    role: String,
    password: String,
    password_again: String,
}

/// A sign-in name: letters (any script), digits and `. _ - @`, at most 64 characters.
fn name_is_acceptable(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn check_new_person(f: &AddPerson, lang: Lang) -> Result<Role, FieldError> {
    let bad = StatusCode::UNPROCESSABLE_ENTITY;
    if !name_is_acceptable(&f.name) {
        return Err(field_error("name", bad, lang.pick(
            "ユーザー名は64文字以内で、文字・数字と「. _ - @」だけを使って入力してください（空白は使えません）。",
            "Enter a user name of up to 64 letters, digits and . _ - @ (no spaces).",
        )));
    }
    let Some(role) = Role::parse(&f.role) else {
        return Err(field_error(
            "role",
            bad,
            lang.pick("権限を選んでください。", "Choose a role."),
        ));
    };
    if super::password_is_acceptable(&f.password).is_err() {
        return Err(field_error(
            "password",
            bad,
            lang.pick(
                "パスワードは12文字以上にしてください。",
                "The password must be at least 12 characters.",
            ),
        ));
    }
    if f.password != f.password_again {
        return Err(field_error(
            "password_again",
            bad,
            lang.pick(
                "確認のために入力したパスワードが一致しません。もう一度入力してください。",
                "The two passwords differ. Please type them again.",
            ),
        ));
    }
    Ok(role)
}

/// `POST /people`: adds a user with an initial password (typed twice).
pub async fn add_person(
    State(state): State<SharedState>,
    signed: Signed,
    Form(f): Form<AddPerson>,
) -> Response {
    if let Err(r) = admin_form(&signed, &f.csrf) {
        return r;
    }
    let lang = signed.lang;
    let f = AddPerson {
        name: f.name.trim().to_string(),
        ..f
    };
    // Shown again on a refusal: never the passwords.
    let shown = AddPerson {
        name: f.name.clone(),
        role: f.role.clone(),
        ..Default::default()
    };
    let role = match check_new_person(&f, lang) {
        Ok(r) => r,
        Err(e) => return people_view(&state, &signed, &shown, Some(e), None, StatusCode::OK).await,
    };
    let password = f.password;
    let hash = match tokio::task::spawn_blocking(move || super::hash_password(&password)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return refused(lang, &Problem::internal(e)),
        Err(e) => return refused(lang, &Problem::internal(e)),
    };
    match people::add_user(&state.db, &shown.name, role.as_str(), &hash).await {
        Ok(true) => {
            audit_change(
                &state,
                &signed,
                "/people",
                &[("name", &shown.name), ("role", role.as_str())],
            );
            Redirect::to("/people?done=added").into_response()
        }
        Ok(false) => {
            let e = field_error(
                "name",
                StatusCode::CONFLICT,
                lang.pick(
                    "このユーザー名はすでに使われています。別の名前を入力してください。",
                    "This user name is taken. Please choose another.",
                ),
            );
            people_view(&state, &signed, &shown, Some(e), None, StatusCode::OK).await
        }
        Err(e) => refused(lang, &Problem::from(e)),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PersonAction {
    csrf: String,
    name: String,
    role: String,
}

/// `POST /people/{action}`, on the user named in the form:
/// - `role`: viewer, staff, disaster or admin; their open sessions carry the new role from
///   their next page;
/// - `disable`: they can no longer sign in, and every session of theirs ends at once;
/// - `enable`: they may sign in again;
/// - `sign-out`: every session of theirs ends (on every device).
///
/// An admin cannot change their own role or disable themself: the city must never be left
/// without an admin.
pub async fn act_on_person(
    State(state): State<SharedState>,
    signed: Signed,
    Path(action): Path<String>,
    Form(f): Form<PersonAction>,
) -> Response {
    if let Err(r) = admin_form(&signed, &f.csrf) {
        return r;
    }
    let lang = signed.lang;
    let own = match action.as_str() {
        "role" => Some(lang.pick(
            "ご自身の権限は変更できません。管理者がいなくならないよう、権限の変更はほかの管理者に依頼してください。",
            "You cannot change your own role: ask another administrator, so the city is never left without one.",
        )),
        "disable" => Some(lang.pick(
            "ご自身を無効にすることはできません。管理者がいなくならないよう、ほかの管理者に依頼してください。",
            "You cannot disable yourself: ask another administrator, so the city is never left without one.",
        )),
        "enable" | "sign-out" => None,
        _ => return not_found(lang, ("この操作はありません。", "There is no such action.")),
    };
    if let (Some(why), true) = (own, f.name == signed.caller.name) {
        let title = lang.pick("ご自身には行えません", "Not on yourself");
        return message(lang, StatusCode::CONFLICT, title, why);
    }
    let db = &state.db;
    let (result, done) = match action.as_str() {
        "role" => {
            let Some(role) = Role::parse(&f.role) else {
                let why = lang.pick(
                    "権限は閲覧・広報担当・防災担当・管理者のいずれかです。",
                    "The role must be viewer, staff, disaster or admin.",
                );
                return refused(lang, &Problem::invalid("role", why));
            };
            (people::set_role(db, &f.name, role.as_str()).await, "role")
        }
        "disable" => (people::set_disabled(db, &f.name, true).await, "disabled"),
        "enable" => (people::set_disabled(db, &f.name, false).await, "enabled"),
        _ => {
            let signed_out = match people::user(db, &f.name).await {
                Ok(Some(_)) => people::end_sessions_of(db, &f.name).await.map(|_| true),
                other => other.map(|_| false),
            };
            (signed_out, "signed_out")
        }
    };
    match result {
        Ok(true) => {
            let mut details = vec![("name", f.name.as_str())];
            if action == "role" {
                details.push(("role", f.role.as_str()));
            }
            audit_change(&state, &signed, &format!("/people/{action}"), &details);
            Redirect::to(&format!("/people?done={done}")).into_response()
        }
        Ok(false) => not_found(
            lang,
            ("この利用者は登録されていません。", "There is no such user."),
        ),
        Err(e) => refused(lang, &Problem::from(e)),
    }
}

// ---------------------------------------------------------------------------------------
// API tokens

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenForm {
    csrf: String,
    name: String,
    role: String,
}

/// A token just created: shown on this one answer, never again.
struct Created {
    name: String,
    role: Role,
    token: String,
}

/// `GET /tokens`: every token by name and role (never the token or its digest), where it
/// comes from, and the form that creates one.
pub async fn tokens_page(State(state): State<SharedState>, signed: Signed) -> Response {
    if let Err(r) = signed.require(Role::Admin) {
        return r;
    }
    tokens_view(&state, &signed, &TokenForm::default(), None, None).await
}

async fn tokens_view(
    state: &SharedState,
    signed: &Signed,
    form: &TokenForm,
    error: Option<FieldError>,
    created: Option<Created>,
) -> Response {
    let lang = signed.lang;
    let stored = match people::stored_tokens(&state.db).await {
        Ok(s) => s,
        Err(e) => return refused(lang, &Problem::from(e)),
    };
    let live = state.tokens.list();
    let mut list: Vec<(String, minijinja::Value)> = live
        .iter()
        .filter(|(_, _, source)| *source == Source::Config)
        .map(|(name, role, _)| {
            let row = context! {
                name => name, role => role_label(role.as_str(), lang), source => "config",
                active => true,
            };
            (name.clone(), row)
        })
        .collect();
    for t in &stored {
        let active = live
            .iter()
            .any(|(n, _, s)| *n == t.name && *s == Source::Stored);
        let row = context! {
            name => t.name, role => role_label(&t.role, lang),
            source => if t.created_by.is_some() { "console" } else { "first_start" },
            created_by => t.created_by, created => local_time(t.created_at, lang),
            active => active,
        };
        list.push((t.name.clone(), row));
    }
    list.sort_by(|a, b| a.0.cmp(&b.0));
    let (error_field, status, error) = match error {
        Some((f, s, e)) => (Some(f), s, Some(e)),
        None if created.is_some() => (None, StatusCode::CREATED, None),
        None => (None, StatusCode::OK, None),
    };
    let created = created.map(|c| {
        context! { name => c.name, role => role_label(c.role.as_str(), lang), token => c.token }
    });
    let mut r = page(
        "tokens.html",
        lang,
        context! {
            me => signed.header(), tokens => list.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
            roles => roles(lang), created => created,
            name => form.name, role => if form.role.is_empty() { "viewer" } else { form.role.as_str() },
            error => error, error_field => error_field,
        },
    );
    *r.status_mut() = status;
    r
}

/// A token name: ASCII letters, digits and `. _ -`, at most 64 characters (it appears in
/// logs, the audit log and rate-limit messages).
fn token_name_is_acceptable(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn name_taken(lang: Lang) -> FieldError {
    field_error(
        "name",
        StatusCode::CONFLICT,
        lang.pick(
            "この名前のトークンはすでにあります（設定ファイルのトークンを含みます）。別の名前を入力してください。",
            "A token with this name exists (including the config file's). Please choose another name.",
        ),
    )
}

/// `POST /tokens`: a new random token with a name and a role, stored hashed only, working
/// on the API at once; its value is shown on this answer only (no-store).
pub async fn create_token(
    State(state): State<SharedState>,
    signed: Signed,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Err(r) = admin_form(&signed, &f.csrf) {
        return r;
    }
    let lang = signed.lang;
    let f = TokenForm {
        name: f.name.trim().to_string(),
        ..f
    };
    let bad = StatusCode::UNPROCESSABLE_ENTITY;
    let checked = if !token_name_is_acceptable(&f.name) {
        Err(field_error(
            "name",
            bad,
            lang.pick(
                "トークン名は64文字以内の半角英数字と「. _ -」で入力してください（例：website-cms）。",
                "Enter a token name of up to 64 ASCII letters, digits and . _ - (for example website-cms).",
            ),
        ))
    } else if state.tokens.list().iter().any(|(n, _, _)| *n == f.name) {
        Err(name_taken(lang))
    } else {
        Role::parse(&f.role).ok_or_else(|| {
            field_error(
                "role",
                bad,
                lang.pick("権限を選んでください。", "Choose a role."),
            )
        })
    };
    let role = match checked {
        Ok(r) => r,
        Err(e) => return tokens_view(&state, &signed, &f, Some(e), None).await,
    };
    let token = crate::api::auth::new_token();
    let digest = hex::encode(crate::api::auth::sha256(&token));
    match people::insert_token(
        &state.db,
        &f.name,
        role.as_str(),
        &digest,
        &signed.caller.name,
    )
    .await
    {
        Ok(()) => {}
        Err(e) if e.is_unique_violation() => {
            return tokens_view(&state, &signed, &f, Some(name_taken(lang)), None).await
        }
        Err(e) => return refused(lang, &Problem::from(e)),
    }
    if let Err(e) = state.tokens.add_stored(&f.name, role, &digest) {
        return refused(lang, &Problem::internal(e));
    }
    audit_change(
        &state,
        &signed,
        "/tokens",
        &[("name", &f.name), ("role", role.as_str())],
    );
    let created = Created {
        name: f.name.clone(),
        role,
        token,
    };
    tokens_view(&state, &signed, &TokenForm::default(), None, Some(created)).await
}

/// `POST /tokens/revoke`: deletes a stored token; it opens nothing from this moment. The
/// config file's tokens are changed in the config file.
pub async fn revoke_token(
    State(state): State<SharedState>,
    signed: Signed,
    Form(f): Form<TokenForm>,
) -> Response {
    if let Err(r) = admin_form(&signed, &f.csrf) {
        return r;
    }
    let lang = signed.lang;
    match people::delete_token(&state.db, &f.name).await {
        Ok(true) => {
            state.tokens.remove_stored(&f.name);
            audit_change(&state, &signed, "/tokens/revoke", &[("name", &f.name)]);
            Redirect::to("/tokens").into_response()
        }
        Ok(false) if state.tokens.list().iter().any(|(n, _, _)| *n == f.name) => message(
            lang,
            StatusCode::CONFLICT,
            lang.pick("この画面では取り消せません", "Not revocable here"),
            lang.pick(
                "設定ファイルで定めたトークンは、この画面では取り消せません。設定ファイル（[[auth.tokens]]）から削除し、狼煙を再起動してください。",
                "Tokens from the config file cannot be revoked here. Remove it from [[auth.tokens]] in the config file and restart Noroshi.",
            ),
        ),
        Ok(false) => not_found(lang, ("この名前のトークンはありません。", "There is no token by this name.")),
        Err(e) => refused(lang, &Problem::from(e)),
    }
}

// ---------------------------------------------------------------------------------------
// The audit log

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AuditFilter {
    who: String,
    limit: Option<i64>,
    cursor: Option<i64>,
}

const PAGE_SIZES: [i64; 3] = [50, 100, 200];

fn via_label(via: &str, lang: Lang) -> &'static str {
    match via {
        "password" => lang.pick("パスワード（ログイン）", "password (sign-in)"),
        "session" => lang.pick("管理画面", "console session"),
        "bearer_token" => lang.pick("APIトークン", "API token"),
        _ => lang.pick("不明", "unknown"),
    }
}

fn outcome_label(status: i32, lang: Lang) -> &'static str {
    match status {
        200..=399 => lang.pick("成功", "done"),
        401 => lang.pick("失敗（認証できません）", "failed (not authenticated)"),
        403 => lang.pick("失敗（権限がありません）", "failed (not permitted)"),
        423 => lang.pick("停止中（ロックアウト）", "locked out"),
        _ => lang.pick("失敗", "failed"),
    }
}

/// An audit time (RFC 3339, Japan time) to the second, as staff read it.
fn audit_time(at: &str, lang: Lang) -> String {
    match chrono::DateTime::parse_from_rfc3339(at) {
        Ok(t) => {
            let t = t.with_timezone(&noroshi_channel_core::jst());
            match lang {
                Lang::Ja => t.format("%Y年%-m月%-d日 %H:%M:%S").to_string(),
                Lang::En => t.format("%-d %b %Y %H:%M:%S JST").to_string(),
            }
        }
        Err(_) => at.to_string(),
    }
}

/// `GET /audit`: who did what, when, from where and how, newest first, by person or
/// token, a page at a time (the API's `GET /api/v1/audit`, as the signed-in admin).
pub async fn audit_page(
    State(state): State<SharedState>,
    signed: Signed,
    Query(q): Query<AuditFilter>,
) -> Response {
    if let Err(r) = signed.require(Role::Admin) {
        return r;
    }
    let lang = signed.lang;
    let who = q.who.trim().to_string();
    let limit = q.limit.filter(|l| PAGE_SIZES.contains(l)).unwrap_or(50);
    let query = crate::api::audit::AuditQuery {
        who: Some(who.clone()).filter(|w| !w.is_empty()),
        cursor: q.cursor,
        limit: Some(limit),
    };
    let found = match crate::api::audit::list(
        State(state.clone()),
        signed.caller.clone(),
        Ok(Query(query)),
    )
    .await
    {
        Ok(Json(p)) => p,
        Err(p) => return refused(lang, &p),
    };
    let items: Vec<minijinja::Value> = found
        .items
        .iter()
        .map(|e| {
            context! {
                at => audit_time(&e.at, lang), who => e.who,
                role => if e.role.is_empty() { "—" } else { role_label(&e.role, lang) },
                via => via_label(&e.via, lang), client => e.client.as_deref().unwrap_or("—"),
                method => e.method, path => e.path, status => e.status,
                outcome => outcome_label(e.status, lang), ok => (200..400).contains(&e.status),
            }
        })
        .collect();
    let link = |cursor: Option<i64>| {
        let mut u = url::form_urlencoded::Serializer::new(String::new());
        if !who.is_empty() {
            u.append_pair("who", &who);
        }
        u.append_pair("limit", &limit.to_string());
        if let Some(c) = cursor {
            u.append_pair("cursor", &c.to_string());
        }
        format!("/audit?{}", u.finish())
    };
    let next = found.next_cursor.map(|c| link(Some(c)));
    let newest = q.cursor.map(|_| link(None));
    page(
        "audit.html",
        lang,
        context! {
            me => signed.header(), items => items, who => who, limit => limit,
            sizes => PAGE_SIZES, next => next, newest => newest,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_anything_is_stored() {
        assert!(name_is_acceptable("suzuki.hanako"));
        assert!(name_is_acceptable("鈴木花子"));
        assert!(!name_is_acceptable("suzuki hanako"));
        assert!(!name_is_acceptable(""));
        assert!(!name_is_acceptable(&"a".repeat(65)));
        assert!(token_name_is_acceptable("website-cms_2"));
        assert!(!token_name_is_acceptable("ウェブ"));
        assert!(!token_name_is_acceptable("a b"));
        assert_eq!(outcome_label(303, Lang::Ja), "成功");
        assert_eq!(
            audit_time("2026-04-01T09:05:07+09:00", Lang::Ja),
            "2026年4月1日 09:05:07"
        );
    }
}
