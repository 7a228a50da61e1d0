//! SessionManager: Login, Logout, currentSession, SessionIsActive.
use crate::engine::auth::display_user;
use crate::engine::auth::session::{normalize_user, Session};
use crate::engine::{Ctx, Engine, Fault, Reply};
use vmodl::value::Args;
use vmodl::{types, Data, MoRef, Value};

pub fn user_session(s: &Session) -> Data {
    Data::new(types::UserSession)
        .with("key", s.key.clone())
        .with("userName", display_user(&s.user))
        .with("fullName", s.full_name.clone())
        .with("loginTime", s.login_time)
        .with("lastActiveTime", s.last_active())
        .with("locale", s.locale.read().clone())
        .with("messageLocale", s.locale.read().clone())
        .with("extensionSession", false)
        .with("ipAddress", s.ip.clone())
        .with("userAgent", s.user_agent.clone())
        .with("callCount", s.call_count.load(std::sync::atomic::Ordering::Relaxed))
}

pub fn property(eng: &Engine, ctx: &Ctx, name: &str) -> Option<Value> {
    Some(match name {
        "currentSession" => user_session(ctx.session.as_ref()?).into(),
        "sessionList" => {
            // Listing every session needs Sessions.TerminateSession on the root.
            let s = ctx.session.as_ref()?;
            let root = eng.inv.read().root();
            if !eng.has_privilege(&s.user, &root, "Sessions.TerminateSession") {
                return None;
            }
            Value::Array(types::UserSession, eng.sessions.all().iter().map(|s| user_session(s).into()).collect())
        }
        "defaultLocale" => "en".into(),
        "messageLocaleList" | "supportedLocaleList" => Value::array_of_strings(["en"]),
        "message" => return None,
        _ => return None,
    })
}

pub fn invoke(eng: &Engine, ctx: &mut Ctx, _this: &MoRef, method: &str, args: Args) -> Option<Reply> {
    Some(match method {
        "Login" => login(eng, ctx, &args),
        "Logout" => {
            let s = match ctx.session() {
                Ok(s) => s.clone(),
                Err(f) => return Some(Err(f)),
            };
            eng.end_session(&s.token);
            Ok(None)
        }
        "SessionIsActive" => {
            let id = args.str("sessionID").unwrap_or("");
            let user = normalize_user(args.str("userName").unwrap_or(""));
            let active = eng.sessions.by_key(id).is_some_and(|s| s.user == user);
            Ok(Some(Value::Bool(active)))
        }
        "TerminateSession" => {
            let ids: Vec<String> = args
                .get("sessionId")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default();
            // All or nothing: an unknown id terminates none of them.
            let mut found = vec![];
            for id in &ids {
                match eng.sessions.by_key(id) {
                    Some(s) => found.push(s),
                    None => return Some(Err(Fault::plain_not_found(format!("session {id} not found")))),
                }
            }
            for s in found {
                eng.end_session(&s.token);
            }
            Ok(None)
        }
        "SetLocale" => match (ctx.session(), args.str("locale")) {
            (Ok(s), Some(l)) if !l.is_empty() => {
                *s.locale.write() = l.to_string();
                Ok(None)
            }
            (Err(f), _) => Err(f),
            _ => Err(Fault::invalid_argument("locale", "locale is required")),
        },
        _ => return None,
    })
}

fn login(eng: &Engine, ctx: &mut Ctx, args: &Args) -> Reply {
    let user = eng.authenticate(args.str("userName").unwrap_or(""), args.str("password").unwrap_or(""), &ctx.ip)?;
    let locale = args.str("locale").unwrap_or("en");
    let s = eng.sessions.create(&user, locale, &ctx.ip, &ctx.user_agent)?;
    // Replacing the caller's session, as vCenter does on a second Login.
    if let Some(old) = ctx.session.take() {
        eng.end_session(&old.token);
    }
    ctx.session = Some(s.clone());
    ctx.new_session = Some(s.clone());
    Ok(Some(user_session(&s).into()))
}
