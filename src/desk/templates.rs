//! Named templates in the official wording, shipped as data (`config/templates/*.toml`) a
//! city edits without rebuilding. A submission names one with `template` and fills its
//! placeholders with `params`; the template gives the title and body in Japanese and its
//! variants (`en`, `ja-easy`). Every template is checked when the daemon starts: its
//! placeholders, its words (no abolished terms), and its rendering with the example values
//! on every enabled channel, so a template that cannot fit is refused at start, not at
//! 3 a.m.
//!
//! ```toml
//! description = "警戒レベル4 避難指示"
//! priority = "disaster"
//!
//! [params.area]
//! description = "対象地区"
//! example = "井上地区、相之島地区、相森地区"
//!
//! [text.ja]
//! title = "【警戒レベル4】避難指示（{{ area }}）"
//! body = "…{{ area }}…"
//!
//! [text.en]
//! title = "…"
//! body = "…"
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use noroshi_channel_core::Priority;
use serde::Deserialize;

use crate::accept::{Refusal, Variant};

/// Terms that must not appear: abolished by the May 2021 revision of the Disaster
/// Countermeasures Basic Act (避難勧告 and 避難指示（緊急） were folded into 避難指示).
pub const ABOLISHED_TERMS: &[&str] = &["避難指示（緊急）", "避難指示(緊急)", "避難勧告"];

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    description: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    params: BTreeMap<String, ParamSpec>,
    text: BTreeMap<String, Text>,
}

/// One placeholder: what it means and a realistic (long) example, used by the start-up
/// check and shown to staff.
#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParamSpec {
    pub description: String,
    pub example: String,
}

#[derive(Clone, Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub title: String,
    pub body: String,
}

/// A loaded template.
#[derive(Clone, Debug)]
pub struct Template {
    pub name: String,
    pub description: String,
    pub priority: Priority,
    pub params: BTreeMap<String, ParamSpec>,
    /// By language; `ja` is the primary.
    pub text: BTreeMap<String, Text>,
}

/// What a template gives a submission.
#[derive(Clone, Debug)]
pub struct Rendered {
    pub title: String,
    pub body: String,
    pub priority: Priority,
    pub variants: BTreeMap<String, Variant>,
}

#[derive(Clone, Debug, Default)]
pub struct Templates(BTreeMap<String, Template>);

fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env
}

impl Templates {
    pub fn get(&self, name: &str) -> Option<&Template> {
        self.0.get(name)
    }
    pub fn names(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
    pub fn iter(&self) -> impl Iterator<Item = &Template> {
        self.0.values()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every `*.toml` in `dir` (the file name without `.toml` is the template's name).
    /// Every problem in every file is reported, each naming its file.
    pub fn load_dir(dir: &Path) -> Result<Templates, Vec<String>> {
        let mut problems = Vec::new();
        let mut out = BTreeMap::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return Err(vec![format!("{}: {e}", dir.display())]),
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_default();
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    problems.push(format!("{}: {e}", path.display()));
                    continue;
                }
            };
            match Template::parse(&name, &text) {
                Ok(t) => {
                    out.insert(name, t);
                }
                Err(errs) => {
                    problems.extend(errs.into_iter().map(|e| format!("{}: {e}", path.display())))
                }
            }
        }
        if problems.is_empty() {
            Ok(Templates(out))
        } else {
            Err(problems)
        }
    }

    /// Fills template `name` with `params`. A missing, unknown or non-text parameter is
    /// refused naming it (`params.area`).
    pub fn render(
        &self,
        name: &str,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Rendered, Refusal> {
        let t = self.get(name).ok_or_else(|| {
            Refusal::invalid(
                "template",
                format!(
                    "no template named `{name}` (there are: {})",
                    self.names().join(", ")
                ),
            )
        })?;
        t.render(params)
    }
}

impl Template {
    /// Parses and checks one template: its placeholders are exactly its declared
    /// parameters, it has Japanese text, and no abolished term appears.
    pub fn parse(name: &str, text: &str) -> Result<Template, Vec<String>> {
        let file: TemplateFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        if !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            problems.push(format!(
                "the file name `{name}` must be lowercase letters, digits and _"
            ));
        }
        let p = file.priority.as_deref().unwrap_or("normal");
        let priority = Priority::parse(p).unwrap_or_else(|| {
            problems.push(format!("priority: `{p}` is not normal, urgent or disaster"));
            Priority::Normal
        });
        if !file.text.contains_key("ja") {
            problems.push("text.ja: the Japanese text is required".into());
        }
        for (lang, t) in &file.text {
            if let Err(Refusal::Invalid { detail, .. }) =
                crate::accept::check_lang(&format!("text.{lang}"), lang)
            {
                problems.push(detail);
            }
            for (part, source) in [("title", &t.title), ("body", &t.body)] {
                let field = format!("text.{lang}.{part}");
                if source.trim().is_empty() {
                    problems.push(format!("{field}: must not be empty"));
                }
                for term in ABOLISHED_TERMS {
                    if source.contains(term) {
                        problems.push(format!(
                            "{field}: `{term}` was abolished in May 2021; use 避難指示 (警戒レベル4) or 緊急安全確保 (警戒レベル5)"
                        ));
                    }
                }
                let env = environment();
                match env.template_from_str(source) {
                    Err(e) => problems.push(format!("{field}: {e}")),
                    Ok(tmpl) => {
                        for used in tmpl.undeclared_variables(false) {
                            if !file.params.contains_key(&used) {
                                problems.push(format!(
                                    "{field}: `{{{{ {used} }}}}` is not a declared parameter (add [params.{used}])"
                                ));
                            }
                        }
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(Template {
            name: name.to_string(),
            description: file.description,
            priority,
            params: file.params,
            text: file.text,
        })
    }

    /// The example values of every parameter.
    pub fn examples(&self) -> BTreeMap<String, serde_json::Value> {
        self.params
            .iter()
            .map(|(k, p)| (k.clone(), serde_json::Value::String(p.example.clone())))
            .collect()
    }

    pub fn render(
        &self,
        params: &BTreeMap<String, serde_json::Value>,
    ) -> Result<Rendered, Refusal> {
        let mut values = BTreeMap::new();
        for (k, v) in params {
            if !self.params.contains_key(k) {
                return Err(Refusal::invalid(
                    format!("params.{k}"),
                    format!(
                        "template `{}` takes no such parameter (it takes: {})",
                        self.name,
                        self.params.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            let text = match v {
                serde_json::Value::String(s) => s.trim().to_string(),
                serde_json::Value::Number(n) => n.to_string(),
                _ => {
                    return Err(Refusal::invalid(
                        format!("params.{k}"),
                        "must be text or a number",
                    ))
                }
            };
            if text.is_empty() {
                return Err(Refusal::invalid(format!("params.{k}"), "must not be empty"));
            }
            if text.chars().count() > 500 {
                return Err(Refusal::invalid(
                    format!("params.{k}"),
                    "must be at most 500 characters",
                ));
            }
            values.insert(k.clone(), text);
        }
        for (k, spec) in &self.params {
            if !values.contains_key(k) {
                return Err(Refusal::invalid(
                    format!("params.{k}"),
                    format!(
                        "template `{}` needs it ({}), e.g. {}",
                        self.name, spec.description, spec.example
                    ),
                ));
            }
        }
        let env = environment();
        let fill = |field: String, source: &str| -> Result<String, Refusal> {
            env.render_str(source, &values)
                .map(|s| s.trim().to_string())
                .map_err(|e| Refusal::invalid(field, e.to_string()))
        };
        let mut variants = BTreeMap::new();
        let mut primary = None;
        for (lang, t) in &self.text {
            let title = fill(format!("template.text.{lang}.title"), &t.title)?;
            let body = fill(format!("template.text.{lang}.body"), &t.body)?;
            if lang == "ja" {
                primary = Some((title, body));
            } else {
                variants.insert(lang.clone(), Variant { title, body });
            }
        }
        let (title, body) = primary.expect("checked at load: ja is required");
        Ok(Rendered {
            title,
            body,
            priority: self.priority,
            variants,
        })
    }
}

/// Renders every template with its example values for every enabled channel, as a
/// submission would be: each refusal (a template that cannot fit X's weighted 280, LINE's
/// limits) is returned, naming the template, the channel and its rule.
pub fn check_against_channels(
    templates: &Templates,
    ctx: &crate::accept::AcceptContext<'_>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for t in templates.iter() {
        let submission = crate::accept::Submission {
            template: Some(t.name.clone()),
            params: t.examples(),
            ..serde_json::from_value(serde_json::json!({})).expect("an empty submission parses")
        };
        let planned = crate::accept::plan(
            &submission,
            ctx,
            "template-check".into(),
            "start-up",
            None,
            None,
            crate::clock::now(),
        );
        match planned {
            Ok(_) => {}
            Err(Refusal::Channels(refusals)) => problems.extend(
                refusals
                    .into_iter()
                    .map(|r| format!("template {}: {} ({})", t.name, r.detail, r.field)),
            ),
            Err(Refusal::Invalid { detail, .. } | Refusal::NotAllowed { detail, .. }) => {
                problems.push(format!("template {}: {detail}", t.name))
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEVEL4: &str = r#"
description = "警戒レベル4 避難指示"
priority = "disaster"
[params.area]
description = "対象地区"
example = "井上地区"
[params.shelter]
description = "避難所"
example = "須坂市役所"
[text.ja]
title = "【警戒レベル4】避難指示（{{ area }}）"
body = "{{ area }}に避難指示を発令しました。避難所：{{ shelter }}"
[text.en]
title = "[Level 4] Evacuation order: {{ area }}"
body = "Evacuate now. Shelter: {{ shelter }}"
"#;

    #[test]
    fn fills_placeholders_and_names_missing_or_unknown_ones() {
        let t = Template::parse("evacuation_level4", LEVEL4).unwrap();
        let mut params = t.examples();
        let r = t.render(&params).unwrap();
        assert_eq!(r.title, "【警戒レベル4】避難指示（井上地区）");
        assert_eq!(r.priority, Priority::Disaster);
        assert_eq!(r.variants["en"].body, "Evacuate now. Shelter: 須坂市役所");
        params.remove("shelter");
        match t.render(&params) {
            Err(Refusal::Invalid { field, .. }) => assert_eq!(field, "params.shelter"),
            other => panic!("{other:?}"),
        }
        params.insert("shelter".into(), "市役所".into());
        params.insert("reason".into(), "増水".into());
        match t.render(&params) {
            Err(Refusal::Invalid { field, .. }) => assert_eq!(field, "params.reason"),
            other => panic!("{other:?}"),
        }
        params.remove("reason");
        params.insert("area".into(), serde_json::json!(["a"]));
        match t.render(&params) {
            Err(Refusal::Invalid { field, .. }) => assert_eq!(field, "params.area"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn abolished_terms_and_undeclared_placeholders_are_refused_at_load() {
        let old = LEVEL4.replace("【警戒レベル4】避難指示（", "避難指示（緊急）（");
        let errs = Template::parse("x", &old).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("abolished")), "{errs:?}");
        let undeclared = LEVEL4.replace("{{ shelter }}\"\n[text.en]", "{{ time }}\"\n[text.en]");
        let errs = Template::parse("x", &undeclared).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("time")), "{errs:?}");
        let no_ja = LEVEL4.replace("[text.ja]", "[text.fr]");
        let errs = Template::parse("x", &no_ja).unwrap_err();
        assert!(errs.iter().any(|e| e.contains("text.ja")), "{errs:?}");
    }

    /// The templates the city gets: every one loads, uses the official five-level terms,
    /// and has English and やさしい日本語.
    #[test]
    fn the_shipped_templates_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/templates");
        let all = Templates::load_dir(&dir).unwrap_or_else(|e| panic!("{e:#?}"));
        for name in [
            "evacuation_level3",
            "evacuation_level4",
            "evacuation_level5",
            "shelter_open",
            "shelter_close",
            "all_clear",
            "correction",
        ] {
            let t = all.get(name).unwrap_or_else(|| panic!("{name} is missing"));
            assert!(t.text.contains_key("en"), "{name}: no en");
            assert!(t.text.contains_key("ja-easy"), "{name}: no ja-easy");
            t.render(&t.examples()).unwrap();
        }
        let level = |n: &str| {
            all.get(n)
                .unwrap()
                .render(&all.get(n).unwrap().examples())
                .unwrap()
        };
        assert!(level("evacuation_level3").title.contains("高齢者等避難"));
        assert!(level("evacuation_level4").title.contains("避難指示"));
        assert!(level("evacuation_level5").title.contains("緊急安全確保"));
    }
}
