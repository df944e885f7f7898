//! The flag catalogue: every flag's list row (key, kind, owner, description, tags, on or off per
//! environment, archived, last change) held in memory and kept current by the change feed, so
//! the console's list searches, filters, sorts and pages without reading and parsing every flag
//! from the store on every request.
//!
//! Why it is correct: every flag write bumps the revision of each environment it affects (every
//! environment for a flag-wide change such as a description or archiving) and records the flag in
//! that environment's change feed, in the write's transaction. A request reads the environments'
//! revisions (one small query); when none moved since the catalogue was built, the catalogue is
//! current. When some moved, only the flags the feed names are read again; when the feed no
//! longer reaches back, or names more than [`MAX_INCREMENTAL`] flags, the catalogue is rebuilt
//! from the store. Revisions are read before the flags, so the catalogue never claims a revision
//! newer than what it holds. Writes by other replicas (PostgreSQL) bump the same revisions.
//!
//! Why in memory rather than SQL: the search is a substring match over four fields (no index
//! helps it in either database), and the databases' `lower()` and collations would not agree with
//! each other or with Rust's Unicode case folding and byte order, which the list has always used.
//! A scan of 10,000 precomputed rows takes well under a millisecond.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, PoisonError, RwLock};

use dimmer_engine::model::FlagKind;
use dimmer_engine::policy::kind_name;
use dimmer_store::{FlagRecord, Store, StoreResult};
use tokio::sync::Mutex;

/// A refresh that would read more changed flags than this rebuilds the catalogue instead.
pub const MAX_INCREMENTAL: usize = 1_000;

/// One flag as the list shows it and searches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The flag key.
    pub key: String,
    /// Its kind.
    pub kind: FlagKind,
    /// Its owner.
    pub owner: Option<String>,
    /// Its description.
    pub description: String,
    /// On (`true`) or off per environment that configures it; an environment not listed is off.
    pub enabled: BTreeMap<String, bool>,
    /// Archived flags are hidden unless asked for.
    pub archived: bool,
    /// Last change, Unix milliseconds.
    pub updated_at: i64,
    /// The searched fields, lower-cased once: key, description, owner, then every tag.
    folded: Vec<String>,
}

impl Row {
    /// The row of a stored flag.
    pub fn of(record: &FlagRecord) -> Self {
        let flag = &record.flag;
        let mut folded = vec![record.key.to_lowercase(), flag.description.to_lowercase()];
        folded.extend(flag.owner.as_deref().map(str::to_lowercase));
        folded.extend(flag.tags.iter().map(|t| t.to_lowercase()));
        Self {
            key: record.key.clone(),
            kind: flag.kind,
            owner: flag.owner.clone(),
            description: flag.description.clone(),
            enabled: flag.environments.iter().map(|(env, cfg)| (env.clone(), cfg.enabled)).collect(),
            archived: record.archived,
            updated_at: record.updated_at,
            folded,
        }
    }

    /// Whether the flag is on in `environment`.
    pub fn is_on(&self, environment: &str) -> bool {
        self.enabled.get(environment).copied().unwrap_or(false)
    }
}

/// Which flags the list shows, by their archived state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Archived {
    /// Live flags only.
    #[default]
    Exclude,
    /// Live and archived flags.
    Include,
    /// Archived flags only.
    Only,
}

/// The list's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sort {
    /// By key.
    #[default]
    Key,
    /// Last change first, then by key.
    Updated,
    /// By kind's name, then by key.
    Kind,
    /// By owner (flags without one first), then by key.
    Owner,
}

/// A search of the catalogue: every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct Search {
    /// Matched, case-insensitively, inside the key, description, owner or any tag; empty: any.
    pub text: String,
    /// Only this kind, by its name in the policy (a name no kind has matches no flag).
    pub kind: Option<String>,
    /// Only flags on (`true`) or off in this environment.
    pub state: Option<(String, bool)>,
    /// Archived flags hidden, included or alone.
    pub archived: Archived,
    /// The order.
    pub sort: Sort,
    /// The page asked for (1-based; clamped to the pages there are).
    pub page: usize,
    /// Rows per page (at least one).
    pub page_size: usize,
}

/// One page of a search.
#[derive(Debug, Clone)]
pub struct Page {
    /// The page's rows, in order.
    pub rows: Vec<Arc<Row>>,
    /// How many flags match.
    pub matched: usize,
    /// How many flags there are, archived ones included.
    pub total: usize,
    /// The page shown (1-based).
    pub page: usize,
    /// How many pages the matches fill (at least one).
    pub pages: usize,
}

/// The catalogue as of a set of environment revisions. Immutable once built.
#[derive(Debug, Default)]
pub struct View {
    /// Every environment in the store's order, with the revision the rows reflect (at least).
    pub environments: Vec<(String, i64)>,
    /// Every flag, archived ones included, by key.
    rows: BTreeMap<String, Arc<Row>>,
}

impl View {
    fn build(environments: Vec<(String, i64)>, records: &[FlagRecord]) -> Self {
        let rows = records.iter().map(|r| (r.key.clone(), Arc::new(Row::of(r)))).collect();
        Self { environments, rows }
    }

    /// How many flags there are, archived ones included.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no flags.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// One page of the flags the search matches.
    pub fn search(&self, search: &Search) -> Page {
        let needle = search.text.trim().to_lowercase();
        let matches = |row: &Row| {
            let archived_ok = match search.archived {
                Archived::Include => true,
                Archived::Only => row.archived,
                Archived::Exclude => !row.archived,
            };
            archived_ok
                && search.kind.as_deref().is_none_or(|k| kind_name(row.kind) == k)
                && search.state.as_ref().is_none_or(|(env, on)| row.is_on(env) == *on)
                && (needle.is_empty() || row.folded.iter().any(|f| f.contains(&needle)))
        };
        // The rows are held by key: in that order no sort is needed.
        let mut rows: Vec<&Arc<Row>> = self.rows.values().filter(|r| matches(r)).collect();
        let by_key = |a: &&Arc<Row>, b: &&Arc<Row>| a.key.cmp(&b.key);
        let order: Option<fn(&Row, &Row) -> Ordering> = match search.sort {
            Sort::Key => None,
            Sort::Updated => Some(|a, b| b.updated_at.cmp(&a.updated_at)),
            Sort::Kind => Some(|a, b| kind_name(a.kind).cmp(kind_name(b.kind))),
            Sort::Owner => Some(|a, b| a.owner.cmp(&b.owner)),
        };
        if let Some(order) = order {
            // Stable, and the input is by key: ties stay by key.
            rows.sort_by(|a, b| order(a, b).then_with(|| by_key(a, b)));
        }
        let matched = rows.len();
        let page_size = search.page_size.max(1);
        let pages = matched.div_ceil(page_size).max(1);
        let page = search.page.clamp(1, pages);
        let rows = rows.into_iter().skip((page - 1) * page_size).take(page_size).cloned().collect();
        Page { rows, matched, total: self.rows.len(), page, pages }
    }
}

/// The catalogue of one store: the current [`View`], refreshed on demand.
#[derive(Debug, Default)]
pub struct Catalogue {
    /// The latest view.
    published: RwLock<Option<Arc<View>>>,
    /// Held by the one refresh running: concurrent requests wait for it and then find the
    /// catalogue current, instead of each reading the same changes.
    refresh: Mutex<()>,
}

impl Catalogue {
    /// An empty catalogue: the first request builds it.
    pub fn new() -> Self {
        Self::default()
    }

    fn published(&self) -> Option<Arc<View>> {
        self.published.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The catalogue as of now: current with the store's revisions, reading only what changed.
    pub async fn view(&self, store: &dyn Store) -> StoreResult<Arc<View>> {
        let revisions = |envs: Vec<dimmer_store::Environment>| -> Vec<(String, i64)> {
            envs.into_iter().map(|e| (e.name, e.revision)).collect()
        };
        let environments = revisions(store.list_environments().await?);
        // Without environments no write leaves a revision behind: nothing says what changed.
        let current =
            |view: &View, environments: &[(String, i64)]| !environments.is_empty() && view.environments == environments;
        if let Some(view) = self.published().filter(|v| current(v, &environments)) {
            return Ok(view);
        }
        let _refreshing = self.refresh.lock().await;
        // Read again under the lock, and before any flag: the view never claims a revision
        // newer than its rows.
        let environments = revisions(store.list_environments().await?);
        let published = self.published();
        if let Some(view) = published.as_ref().filter(|v| current(v, &environments)) {
            return Ok(view.clone());
        }
        let refreshed = match &published {
            Some(view) if !environments.is_empty() => Self::refreshed(store, view, &environments).await?,
            _ => None,
        };
        let view = match refreshed {
            Some(view) => view,
            // No view yet, or too much changed: read every flag.
            None => Arc::new(View::build(environments, &store.list_flags(true).await?)),
        };
        *self.published.write().unwrap_or_else(PoisonError::into_inner) = Some(view.clone());
        Ok(view)
    }

    /// `view` brought up to `environments`' revisions through the change feed; `None` when the
    /// catalogue must be rebuilt.
    async fn refreshed(
        store: &dyn Store,
        view: &View,
        environments: &[(String, i64)],
    ) -> StoreResult<Option<Arc<View>>> {
        let known: BTreeMap<&str, i64> = view.environments.iter().map(|(e, r)| (e.as_str(), *r)).collect();
        let mut changed = BTreeSet::new();
        for (env, revision) in environments {
            // An environment new to the view: its whole feed (a flag may have been changed in it
            // alone since it was created).
            let since = known.get(env.as_str()).copied().unwrap_or(0);
            if *revision == since {
                continue;
            }
            let Some(items) = store.changes_since(env, since).await? else { return Ok(None) };
            changed.extend(items.into_iter().filter(|i| i.kind == "flag").map(|i| i.key));
            if changed.len() > MAX_INCREMENTAL {
                return Ok(None);
            }
        }
        // Revisions that moved for segments only leave every row as it was.
        let mut rows = view.rows.clone();
        for key in changed {
            match store.get_flag(&key).await? {
                Some(record) => rows.insert(key, Arc::new(Row::of(&record))),
                None => rows.remove(&key),
            };
        }
        Ok(Some(Arc::new(View { environments: environments.to_vec(), rows })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dimmer_engine::Flag;
    use dimmer_engine::model::EnvironmentConfig;

    fn record(key: &str, kind: FlagKind, owner: Option<&str>, on_in: &[&str], archived: bool, at: i64) -> FlagRecord {
        let mut flag = Flag {
            kind,
            description: format!("Does {key}"),
            owner: owner.map(str::to_owned),
            tags: vec!["Área-Ünïcode".into()],
            ..Flag::default()
        };
        for env in ["production", "staging"] {
            let cfg = EnvironmentConfig { enabled: on_in.contains(&env), ..EnvironmentConfig::default() };
            flag.environments.insert(env.into(), cfg);
        }
        FlagRecord { key: key.into(), flag, version: 1, archived, created_at: at, updated_at: at }
    }

    fn view() -> View {
        View::build(
            vec![("production".into(), 1), ("staging".into(), 1)],
            &[
                record("a", FlagKind::Release, Some("team-b"), &["production"], false, 3),
                record("b", FlagKind::Experiment, None, &[], false, 5),
                record("c", FlagKind::Release, Some("team-a"), &["staging"], true, 4),
                record("d", FlagKind::Release, Some("team-a"), &["production", "staging"], false, 5),
            ],
        )
    }

    fn keys(page: &Page) -> Vec<&str> {
        page.rows.iter().map(|r| r.key.as_str()).collect()
    }

    fn search() -> Search {
        Search { page: 1, page_size: 50, ..Search::default() }
    }

    #[test]
    fn archived_flags_are_hidden_included_or_alone_as_asked() {
        let v = view();
        assert_eq!(keys(&v.search(&search())), ["a", "b", "d"]);
        assert_eq!(keys(&v.search(&Search { archived: Archived::Include, ..search() })), ["a", "b", "c", "d"]);
        assert_eq!(keys(&v.search(&Search { archived: Archived::Only, ..search() })), ["c"]);
        assert_eq!(v.search(&search()).total, 4);
    }

    #[test]
    fn text_matches_any_field_ignoring_case_unicode_included() {
        let v = view();
        assert_eq!(keys(&v.search(&Search { text: " TEAM-A ".into(), ..search() })), ["d"]);
        assert_eq!(keys(&v.search(&Search { text: "does b".into(), ..search() })), ["b"]);
        assert_eq!(v.search(&Search { text: "área-ünïcode".into(), ..search() }).matched, 3);
        assert_eq!(v.search(&Search { text: "nothing".into(), ..search() }).matched, 0);
    }

    #[test]
    fn kind_and_state_filters_combine() {
        let v = view();
        let on = Search { state: Some(("production".into(), true)), ..search() };
        assert_eq!(keys(&v.search(&on)), ["a", "d"]);
        let off = Search { state: Some(("production".into(), false)), kind: Some("experiment".into()), ..search() };
        assert_eq!(keys(&v.search(&off)), ["b"]);
        // An environment a flag does not configure is off there.
        let elsewhere = Search { state: Some(("qa".into(), false)), ..search() };
        assert_eq!(keys(&v.search(&elsewhere)), ["a", "b", "d"]);
    }

    #[test]
    fn sorts_break_ties_by_key() {
        let v = view();
        let by = |sort| keys(&v.search(&Search { sort, ..search() })).join(",");
        assert_eq!(by(Sort::Updated), "b,d,a");
        assert_eq!(by(Sort::Kind), "b,a,d");
        assert_eq!(by(Sort::Owner), "b,d,a");
    }

    #[test]
    fn pages_are_clamped_to_the_pages_there_are() {
        let v = view();
        let page = v.search(&Search { page_size: 2, page: 2, ..search() });
        assert_eq!((keys(&page), page.page, page.pages, page.matched), (vec!["d"], 2, 2, 3));
        let page = v.search(&Search { page_size: 2, page: 99, ..search() });
        assert_eq!(page.page, 2);
        let none = v.search(&Search { text: "zzz".into(), page: 0, ..search() });
        assert_eq!((none.page, none.pages, none.rows.len()), (1, 1, 0));
    }

    /// The catalogue after a series of writes holds what a fresh read of every flag holds.
    #[tokio::test]
    async fn the_catalogue_follows_writes_through_the_change_feed() {
        use dimmer_store::ChangeMeta;
        use dimmer_store::testing::TempDir;

        let dir = TempDir::new("catalogue");
        let store = dimmer_store::open(None, &dir.0, Arc::new(dimmer_domain::SystemClock)).await.expect("store");
        store.ensure_environments(&dimmer_store::DEFAULT_ENVIRONMENTS).await.expect("environments");
        let meta = ChangeMeta { actor: "test".into(), reason: None };
        let catalogue = Catalogue::new();
        for key in ["a", "b", "c"] {
            store.create_flag(key, &Flag::default(), &meta).await.expect("create");
        }
        let first = catalogue.view(store.as_ref()).await.expect("view");
        assert_eq!(first.len(), 3);
        let again = catalogue.view(store.as_ref()).await.expect("view");
        assert!(Arc::ptr_eq(&first, &again), "nothing changed: the same view");

        // One environment's change, a flag-wide change, an archive, a new environment and a
        // change in it alone, a new flag.
        let mut b = store.get_flag("b").await.expect("read").expect("b");
        b.flag.environments.insert("production".into(), EnvironmentConfig { enabled: true, ..Default::default() });
        let b = store.update_flag("b", &b.flag, b.version, &meta).await.expect("update");
        let mut flag = b.flag.clone();
        flag.description = "Now described".into();
        flag.owner = Some("Team".into());
        let b = store.update_flag("b", &flag, b.version, &meta).await.expect("update");
        store.set_flag_archived("c", true, None, &meta).await.expect("archive");
        store.create_environment("qa", &meta).await.expect("environment");
        let mut flag = b.flag.clone();
        flag.environments.insert("qa".into(), EnvironmentConfig { enabled: true, ..Default::default() });
        store.update_flag("b", &flag, b.version, &meta).await.expect("update");
        store.create_flag("d", &Flag::default(), &meta).await.expect("create");

        let view = catalogue.view(store.as_ref()).await.expect("view");
        let rebuilt = View::build(Vec::new(), &store.list_flags(true).await.expect("flags"));
        assert_eq!(view.rows, rebuilt.rows);
        assert_eq!(
            view.environments.iter().map(|(e, _)| e.as_str()).collect::<Vec<_>>(),
            ["development", "production", "qa", "staging"]
        );
        let on_in_qa = Search { state: Some(("qa".into(), true)), ..search() };
        assert_eq!(keys(&view.search(&on_in_qa)), ["b"]);
        assert_eq!(keys(&view.search(&Search { text: "team".into(), ..search() })), ["b"]);
        assert_eq!(keys(&view.search(&Search { archived: Archived::Only, ..search() })), ["c"]);
    }
}
