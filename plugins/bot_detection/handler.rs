//! `bot-detection`: refuses clients by User-Agent, as Kong 3.9.3's plugin does
//! (`kong/plugins/bot-detection/handler.lua`): the allow list, then the deny list, then Kong's
//! built-in list of bots and HTTP libraries (`rules.lua`, copied in [`BOTS`]).

use std::sync::{Arc, LazyLock};

use http::{header, StatusCode};
use regex::{Regex, RegexSet};
use tollgate_config::entity::Plugin as PluginEntity;
use tollgate_config::plugins::bot_detection::{compile, BotDetectionConfig, SCHEMA};
use uuid::Uuid;

use super::{error_response, Ctx, Deps, Flow, Handler, Instance, Plugin};

pub const HANDLER: Handler = Handler {
    schema: &SCHEMA,
    build,
};

/// Kong 3.9.3's `kong/plugins/bot-detection/rules.lua`, verbatim.
pub const BOTS: &[&str] = &[
    r"(Pingdom\.com_bot_version_)(\d+)\.(\d+)",
    r"(facebookexternalhit)/(\d+)\.(\d+)",
    r"Google.*/\+/web/snippet",
    r"(Twitterbot)/(\d+)\.(\d+)",
    r"\b(Boto3?|JetS3t|aws-(?:cli|sdk-(?:cpp|go|java|nodejs|ruby2?|dotnet-(?:\d{1,2}|core)))|s3fs)/(\d+)\.(\d+)(?:\.(\d+)|)",
    r" PTST/\d+(?:\.)?\d+$",
    r"/((?:Ant-)?Nutch|[A-z]+[Bb]ot|[A-z]+[Ss]pider|Axtaris|fetchurl|Isara|ShopSalad|Tailsweep)[ \-](\d+)(?:\.(\d+)(?:\.(\d+))?)?",
    r"\b(008|Altresium|Argus|BaiduMobaider|BoardReader|DNSGroup|DataparkSearch|EDI|Goodzer|Grub|INGRID|Infohelfer|LinkedInBot|LOOQ|Nutch|OgScrper|PathDefender|Peew|PostPost|Steeler|Twitterbot|VSE|WebCrunch|WebZIP|Y!J-BR[A-Z]|YahooSeeker|envolk|sproose|wminer)/(\d+)(?:\.(\d+)|)(?:\.(\d+)|)",
    r"(MSIE) (\d+)\.(\d+)([a-z]\d|[a-z]|);.* MSIECrawler",
    r"(Google-HTTP-Java-Client|Apache-HttpClient|Go-http-client|scalaj-http|http%20client|Python-urllib|HttpMonitor|TLSProber|WinHTTP|JNLP|okhttp|aihttp|reqwest|axios|unirest-(?:java|python|ruby|nodejs|php|net))(?:[ /](\d+)(?:\.(\d+)|)(?:\.(\d+)|)|)",
    r"(CSimpleSpider|Cityreview Robot|CrawlDaddy|CrawlFire|Finderbots|Index crawler|Job Roboter|KiwiStatus Spider|Lijit Crawler|QuerySeekerSpider|ScollSpider|Trends Crawler|USyd-NLP-Spider|SiteCat Webbot|BotName\/\$BotVersion|123metaspider-Bot|1470\.net crawler|50\.nu|8bo Crawler Bot|Aboundex|Accoona-[A-z]{1,30}-Agent|AdsBot-Google(?:-[a-z]{1,30}|)|altavista|AppEngine-Google|archive.{0,30}\.org_bot|archiver|Ask Jeeves|[Bb]ai[Dd]u[Ss]pider(?:-[A-Za-z]{1,30})(?:-[A-Za-z]{1,30}|)|bingbot|BingPreview|blitzbot|BlogBridge|Bloglovin|BoardReader Blog Indexer|BoardReader Favicon Fetcher|boitho.com-dc|BotSeer|BUbiNG|\b\w{0,30}favicon\w{0,30}\b|\bYeti(?:-[a-z]{1,30}|)|Catchpoint(?: bot|)|[Cc]harlotte|Checklinks|clumboot|Comodo HTTP\(S\) Crawler|Comodo-Webinspector-Crawler|ConveraCrawler|CRAWL-E|CrawlConvera|Daumoa(?:-feedfetcher|)|Feed Seeker Bot|Feedbin|findlinks|Flamingo_SearchEngine|FollowSite Bot|furlbot|Genieo|gigabot|GomezAgent|gonzo1|(?:[a-zA-Z]{1,30}-|)Googlebot(?:-[a-zA-Z]{1,30}|)|Google SketchUp|grub-client|gsa-crawler|heritrix|HiddenMarket|holmes|HooWWWer|htdig|ia_archiver|ICC-Crawler|Icarus6j|ichiro(?:/mobile|)|IconSurf|IlTrovatore(?:-Setaccio|)|InfuzApp|Innovazion Crawler|InternetArchive|IP2[a-z]{1,30}Bot|jbot\b|KaloogaBot|Kraken|Kurzor|larbin|LEIA|LesnikBot|Linguee Bot|LinkAider|LinkedInBot|Lite Bot|Llaut|lycos|Mail\.RU_Bot|masscan|masidani_bot|Mediapartners-Google|Microsoft .{0,30} Bot|mogimogi|mozDex|MJ12bot|msnbot(?:-media {0,2}|)|msrbot|Mtps Feed Aggregation System|netresearch|Netvibes|NewsGator[^/]{0,30}|^NING|Nutch[^/]{0,30}|Nymesis|ObjectsSearch|OgScrper|Orbiter|OOZBOT|PagePeeker|PagesInventory|PaxleFramework|Peeplo Screenshot Bot|PlantyNet_WebRobot|Pompos|Qwantify|Read%20Later|Reaper|RedCarpet|Retreiver|Riddler|Rival IQ|scooter|Scrapy|Scrubby|searchsight|seekbot|semanticdiscovery|SemrushBot|Simpy|SimplePie|SEOstats|SimpleRSS|SiteCon|Slackbot-LinkExpanding|Slack-ImgProxy|Slurp|snappy|Speedy Spider|Squrl Java|Stringer|TheUsefulbot|ThumbShotsBot|Thumbshots\.ru|Tiny Tiny RSS|Twitterbot|WhatsApp|URL2PNG|Vagabondo|VoilaBot|^vortex|Votay bot|^voyager|WASALive.Bot|Web-sniffer|WebThumb|WeSEE:[A-z]{1,30}|WhatWeb|WIRE|WordPress|Wotbox|www\.almaden\.ibm\.com|Xenu(?:.s|) Link Sleuth|Xerka [A-z]{1,30}Bot|yacy(?:bot|)|YahooSeeker|Yahoo! Slurp|Yandex\w{1,30}|YodaoBot(?:-[A-z]{1,30}|)|YottaaMonitor|Yowedo|^Zao|^Zao-Crawler|ZeBot_www\.ze\.bz|ZooShot|ZyBorg)(?:[ /]v?(\d+)(?:\.(\d+)(?:\.(\d+)|)|)|)",
    r"(?:\/[A-Za-z0-9\.]+|) {0,5}([A-Za-z0-9 \-_\!\[\]:]{0,50}(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]{0,50}))[/ ](\d+)(?:\.(\d+)(?:\.(\d+)|)|)",
    r"(?:\/[A-Za-z0-9\.]+|) {0,5}([A-Za-z0-9 \-_\!\[\]:]{0,50}(?:[Aa]rchiver|[Ii]ndexer|[Ss]craper|[Bb]ot|[Ss]pider|[Cc]rawl[a-z]{0,50})) (\d+)(?:\.(\d+)(?:\.(\d+)|)|)",
    r"((?:[A-z0-9]{1,50}|[A-z\-]{1,50} ?|)(?: the |)(?:[Ss][Pp][Ii][Dd][Ee][Rr]|[Ss]crape|[Cc][Rr][Aa][Ww][Ll])[A-z0-9]{0,50})(?:(?:[ /]| v)(\d+)(?:\.(\d+)|)(?:\.(\d+)|)|)",
];

/// The built-in list, compiled once. PCRE reads `\w`, `\d` and `\b` as ASCII; so does
/// this. `None` only if the list failed to compile, which a test rules out; the plugin then
/// refuses nothing by it rather than taking the node down.
static BUILT_IN: LazyLock<Option<RegexSet>> = LazyLock::new(|| {
    let ascii = |r: &&str| {
        r.replace(r"\w", "[0-9A-Za-z_]")
            .replace(r"\d", "[0-9]")
            .replace(r"\b", r"(?-u:\b)")
    };
    match regex::RegexSetBuilder::new(BOTS.iter().map(ascii))
        .size_limit(64 << 20)
        .build()
    {
        Ok(set) => Some(set),
        Err(e) => {
            tracing::error!(error = %e, "bot-detection's built-in rules do not compile");
            None
        }
    }
});

fn build(p: &PluginEntity, _deps: &Deps) -> Option<Instance> {
    let cfg = BotDetectionConfig::parse(&p.config.0)?;
    let list = |l: &[String]| -> Option<Vec<Regex>> { l.iter().map(|r| compile(r).ok()).collect() };
    LazyLock::force(&BUILT_IN);
    Some(Arc::new(BotDetection {
        id: p.id,
        allow: list(&cfg.allow)?,
        deny: list(&cfg.deny)?,
    }))
}

pub struct BotDetection {
    id: Uuid,
    allow: Vec<Regex>,
    deny: Vec<Regex>,
}

impl BotDetection {
    /// Whether the User-Agent is refused: not allowed, and denied or a known bot.
    fn refused(&self, ua: &str) -> bool {
        if self.allow.iter().any(|r| r.is_match(ua)) {
            return false;
        }
        self.deny.iter().any(|r| r.is_match(ua))
            || BUILT_IN.as_ref().is_some_and(|set| set.is_match(ua))
    }
}

impl Plugin for BotDetection {
    super::identity!();

    fn access(&self, _ctx: &mut Ctx<'_>, req: &mut http::request::Parts) -> Flow {
        let mut all = req.headers.get_all(header::USER_AGENT).iter();
        let Some(ua) = all.next() else {
            return Flow::Continue;
        };
        if all.next().is_some() {
            return Flow::Respond(error_response(
                StatusCode::BAD_REQUEST,
                "Only one User-Agent header allowed",
            ));
        }
        let ua = String::from_utf8_lossy(ua.as_bytes());
        if self.refused(ua.trim()) {
            return Flow::Respond(error_response(StatusCode::FORBIDDEN, "Forbidden"));
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(allow: &[&str], deny: &[&str]) -> BotDetection {
        BotDetection {
            id: Uuid::nil(),
            allow: allow.iter().map(|r| compile(r).unwrap()).collect(),
            deny: deny.iter().map(|r| compile(r).unwrap()).collect(),
        }
    }

    #[test]
    fn the_built_in_list_compiles() {
        assert!(BUILT_IN.is_some());
    }

    #[test]
    fn kongs_built_in_list_blocks_bots_and_libraries_not_browsers_or_curl() {
        let p = plugin(&[], &[]);
        for bot in [
            "Googlebot/2.1 (+http://www.google.com/bot.html)",
            "facebookexternalhit/1.1",
            "Go-http-client/1.1",
            "reqwest/0.12",
            "python-urllib/3.1".replace("python", "Python").as_str(),
        ] {
            assert!(p.refused(bot), "{bot}");
        }
        for ok in [
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_10_3) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/41.0.2272.118 Safari/537.36",
            "curl/7.43.0",
            "python-requests/2.31",
            "helloworld",
        ] {
            assert!(!p.refused(ok), "{ok}");
        }
        // The allow list wins over the built-in list; the deny list adds to it.
        assert!(!plugin(&["facebookexternalhit"], &[]).refused("facebookexternalhit/1.1"));
        assert!(plugin(&[], &["helloworld"]).refused("helloworld"));
    }
}
