//! How a mutation's Lua script and the Rust that calls it are declared together.
//!
//! Every mutation is one script run on the Redis server, so it is one atomic step whichever
//! daemon sends it: it checks, changes, bumps the revision, keeps the sorted sets in step and
//! publishes the `watch` event, all inside one `EVAL`. Two daemons changing one room at the same
//! moment are serialized by Redis, and the events of one room are published in revision order.
//! No script parses a room (see [`super::layout`] for the keys and fields they touch).
//!
//! [`script!`] declares one: a struct whose fields are the script's arguments by name, and the
//! Lua that sees each argument as a local of the same name. Both come from the one list, in one
//! order, so an argument cannot be filled by the wrong value or read from the wrong slot: the
//! compiler wants every field, and the Lua never indexes `ARGV` itself (a unit test checks that,
//! and that every argument is used). Every script gets the same five keys, as locals `room`,
//! `index`, `changed`, `created` and `rated` (so a script can never touch a key it was not
//! given), and answers `{status, value}` as strings.

use redis::Cmd;

use super::layout::Keys;

/// A script and its arguments (implemented by [`script!`]).
pub(super) trait Script {
    /// The argument names, in `ARGV` order.
    const ARGV: &'static [&'static str];
    /// The name of the trailing field/value pairs, if the script takes them.
    const REST: Option<&'static str>;
    /// The script's Lua without its prologue.
    const BODY: &'static str;
    /// The script, hashed once.
    fn script() -> &'static redis::Script;
    /// Adds the arguments to a call, in `ARGV` order.
    fn push_args(self, command: &mut Cmd);

    /// `EVALSHA` of the script on the five keys of room `name`, with the arguments. Built as one
    /// `Cmd`, whose arguments share one buffer: a 5 KB room is some 300 fields, and the
    /// `redis` crate's `ScriptInvocation` copied each twice more, each in its own allocation
    /// (measured: most of the daemon's CPU for a `saveRoom`).
    fn command(self, keys: &Keys, name: &str) -> Cmd
    where
        Self: Sized,
    {
        let mut command = redis::cmd("EVALSHA");
        command
            .arg(Self::script().get_hash())
            .arg(5)
            .arg(keys.room(name))
            .arg(keys.index())
            .arg(keys.changed())
            .arg(keys.created())
            .arg(keys.rated(name));
        self.push_args(&mut command);
        command
    }
}

/// The whole Lua of a script: the keys and arguments as named locals, then `body`. With `rest`,
/// the local of that name is the `ARGV` index of the first field/value pair.
pub(super) fn lua(argv: &[&str], rest: Option<&str>, body: &str) -> String {
    let mut lua =
        String::from(
        "local room, index, changed, created, rated = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n",
    );
    if !argv.is_empty() {
        lua.push_str(&format!(
            "local {} = unpack(ARGV, 1, {})\n",
            argv.join(", "),
            argv.len()
        ));
    }
    if let Some(rest) = rest {
        lua.push_str(&format!("local {rest} = {}\n", argv.len() + 1));
    }
    lua.push_str(body);
    lua
}

/// The one name in `names`, if any (`script!`'s optional `rest`).
pub(super) const fn rest(names: &[&'static str]) -> Option<&'static str> {
    match names {
        [name] => Some(name),
        _ => None,
    }
}

/// Declares a script with its arguments by name (see the module docs):
///
/// ```ignore
/// script! {
///     /// What it does.
///     Delete<'a> { name: &'a str, expected: String } => "lua using name and expected"
/// }
/// ```
///
/// `rest fields` after the arguments adds `fields: Vec<(Vec<u8>, Vec<u8>)>`, sent as pairs after
/// them. Field types are anything the `redis` crate writes as one argument (strings, bytes,
/// integers).
macro_rules! script {
    (
        $(#[$doc:meta])*
        $name:ident<$lt:lifetime> { $($arg:ident: $ty:ty),* $(,)? }
        $(rest $rest:ident)?
        => $body:expr
    ) => {
        $(#[$doc])*
        pub(super) struct $name<$lt> {
            $(pub $arg: $ty,)*
            $(pub $rest: Vec<(Vec<u8>, Vec<u8>)>,)?
        }

        impl $crate::remote::script::Script for $name<'_> {
            const ARGV: &'static [&'static str] = &[$(stringify!($arg)),*];
            const REST: Option<&'static str> = $crate::remote::script::rest(&[$(stringify!($rest))?]);
            const BODY: &'static str = $body;

            fn script() -> &'static ::redis::Script {
                static SCRIPT: std::sync::LazyLock<::redis::Script> = std::sync::LazyLock::new(|| {
                    ::redis::Script::new(&$crate::remote::script::lua(
                        <$name<'static> as $crate::remote::script::Script>::ARGV,
                        <$name<'static> as $crate::remote::script::Script>::REST,
                        <$name<'static> as $crate::remote::script::Script>::BODY,
                    ))
                });
                &SCRIPT
            }

            fn push_args(self, command: &mut ::redis::Cmd) {
                $(command.arg(self.$arg);)*
                $(for (field, value) in self.$rest {
                    command.arg(field).arg(value);
                })?
            }
        }
    };
}

/// The Lua that removes room `name` everywhere and publishes the event line `event` on `channel`
/// (a macro, so that `concat!` can put it into a script's body).
macro_rules! remove_room {
    () => {
        "redis.call('UNLINK', room, rated)
redis.call('ZREM', index, name)
redis.call('ZREM', changed, name)
redis.call('ZREM', created, name)
redis.call('PUBLISH', channel, event)
"
    };
}

/// The Lua that ends a change of room `name`, given the locals `rev` (its revision as read, a
/// string) and `changes` (the field/value pairs the change writes): writes them, the time `now`
/// as its last change and the next revision in one `HSET`, notes the time in `changed`, and
/// publishes `head .. revision .. tail` on `channel`; answers `{'ok', revision}`.
///
/// A swipe reads what it needs in one `HMGET` and writes in one `HSET`: each `redis.call`
/// costs Redis some 0.3-0.5 us beyond the command itself (README "Performance").
macro_rules! changed_and_published {
    () => {
        "rev = string.format('%d', (tonumber(rev) or 0) + 1)
redis.call('HSET', room, 'at', now, 'rev', rev, unpack(changes))
redis.call('ZADD', changed, now, name)
redis.call('PUBLISH', channel, head .. rev .. tail)
return {'ok', rev}
"
    };
}

/// The Lua that reads the room's `doc` into the local `doc` only when the local `flag` (the
/// room's flag for the object the change writes into) is not `1`, so that `ensure_object!` can
/// add the placeholder; it returns early from a room in the whole form (`{'whole', json}`, for
/// the daemon to split: `split.rs`) or without a room (`{'missing', '0'}`). Only the split form
/// has flags, so a flagged room needs no more: its JSON stays out of Lua (it used to be read by
/// every `setProgress`, 126 us of Redis's thread per call with 100 KB of other fields).
macro_rules! doc_unless_flagged {
    () => {
        "local doc = false
if flag ~= '1' then
  doc = redis.call('HGET', room, 'doc')
  if not doc then
    local whole = redis.call('HGET', room, 'room')
    if whole then return {'whole', whole} end
    return {'missing', '0'}
  end
end
"
    };
}

/// The Lua that makes sure room `room` has a `$key` object, flagged by field `$flag`, given the
/// locals `doc` (its `doc` field) and `flag` (its `$flag` field, `false` when absent): a room
/// without the key gets its placeholder appended to `doc` (a new key goes last, as in the other
/// backends); one saved with `null` already has the placeholder in place.
macro_rules! ensure_object {
    ($flag:literal, $key:literal) => {
        concat!(
            "if not flag then\n",
            "  redis.call('HSET', room, 'doc', string.sub(doc, 1, -2) .. ',\"",
            $key,
            "\":0}', '",
            $flag,
            "', '1')\n",
            "elseif flag ~= '1' then\n",
            "  redis.call('HSET', room, '",
            $flag,
            "', '1')\n",
            "end\n",
        )
    };
}

#[cfg(test)]
mod tests {
    use super::Script;
    use crate::remote::{delete, progress, rate, save, split};

    /// Every declared script, as (name, ARGV, REST, BODY).
    fn declared() -> Vec<(
        &'static str,
        &'static [&'static str],
        Option<&'static str>,
        &'static str,
    )> {
        fn one<S: Script>(
            name: &'static str,
        ) -> (
            &'static str,
            &'static [&'static str],
            Option<&'static str>,
            &'static str,
        ) {
            (name, S::ARGV, S::REST, S::BODY)
        }
        vec![
            one::<save::Save>("Save"),
            one::<save::Restore>("Restore"),
            one::<delete::Delete>("Delete"),
            one::<delete::DeleteIfBelow>("DeleteIfBelow"),
            one::<rate::AddRating>("AddRating"),
            one::<progress::SetProgress>("SetProgress"),
            one::<split::SplitRoom>("SplitRoom"),
        ]
    }

    fn words(lua: &str) -> Vec<&str> {
        lua.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| !w.is_empty())
            .collect()
    }

    #[test]
    fn scripts_read_arguments_and_keys_only_by_name() {
        for (name, argv, rest, body) in declared() {
            assert!(
                !body.contains("ARGV[") && !body.contains("KEYS"),
                "{name} indexes ARGV or KEYS itself: its arguments would not follow the declaration"
            );
            let used = words(body);
            for arg in argv.iter().chain(&rest) {
                assert!(
                    used.contains(arg),
                    "{name} declares `{arg}` but never uses it"
                );
            }
            // The only other use of ARGV is taking the rest's pairs.
            assert_eq!(
                body.contains("ARGV"),
                rest.is_some(),
                "{name}: ARGV outside the declared rest"
            );
        }
    }

    #[test]
    fn the_prologue_names_keys_and_arguments_in_order() {
        let lua = super::lua(&["name", "expected"], Some("fields"), "return 1\n");
        assert_eq!(
            lua,
            "local room, index, changed, created, rated = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]\n\
             local name, expected = unpack(ARGV, 1, 2)\n\
             local fields = 3\n\
             return 1\n"
        );
        let (_, argv, rest, body) = declared()[0];
        let whole = super::lua(argv, rest, body);
        assert!(whole.ends_with(body));
    }
}
