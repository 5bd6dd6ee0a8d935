//! A report as an A4 PDF, typeset by Typst used as a library: `server/doctor/report.typ` reads a
//! JSON view of the report (words in the reader's language, numbers formatted) and the findings'
//! charts as SVG files of an in-memory world. The font is WenQuanYi Micro Hei (Chinese and Latin
//! in one face, Debian's `fonts-wqy-microhei`, installed by the setup script). The same report,
//! language and signature give the same bytes: the document's date and identifier come from the
//! report, never from the clock.

use std::{collections::HashMap, sync::LazyLock};

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde_json::{Value, json};
use typst::{
    Library, LibraryExt, World,
    diag::{FileError, FileResult},
    foundations::{Bytes, Datetime, Smart},
    layout::PagedDocument,
    syntax::{FileId, Source, VirtualPath},
    text::{Font, FontBook},
    utils::LazyHash,
};

use super::{Finding, Kpis, ReportContent, chart};

const TEMPLATE: &str = include_str!("../../doctor/report.typ");

/// Where the report's font is looked for.
pub const FONT_FILES: [&str; 2] =
    ["/usr/share/fonts/truetype/wqy/wqy-microhei.ttc", "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc"];

message_error! {
    /// Why a PDF could not be made: for the operator.
    pub struct PdfError;
}

/// The reader's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// English.
    En,
    /// Simplified Chinese.
    Zh,
}

impl Language {
    /// From a user's `language` (`en` or `zh`); English otherwise.
    pub fn from_code(code: &str) -> Self {
        if code == "zh" { Language::Zh } else { Language::En }
    }
}

/// Who signed the report and what they added.
#[derive(Debug, Clone)]
pub struct Signature {
    /// The engineer's name.
    pub engineer: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Their note to the owner.
    pub note: String,
}

struct Fonts {
    book: LazyHash<FontBook>,
    fonts: Vec<Font>,
}

static FONTS: LazyLock<Result<Fonts, String>> = LazyLock::new(|| {
    let path = FONT_FILES.iter().find(|p| std::path::Path::new(p).exists()).ok_or_else(|| {
        format!("no font for reports: install Debian's fonts-wqy-microhei (looked for {})", FONT_FILES.join(", "))
    })?;
    let data = std::fs::read(path).map_err(|e| format!("reading {path}: {e}"))?;
    let fonts: Vec<Font> = Font::iter(Bytes::new(data)).collect();
    if fonts.is_empty() {
        return Err(format!("{path} holds no font Typst can read"));
    }
    Ok(Fonts { book: LazyHash::new(FontBook::from_fonts(&fonts)), fonts })
});

static LIBRARY: LazyLock<LazyHash<Library>> = LazyLock::new(|| LazyHash::new(Library::default()));

/// The in-memory world one report is typeset in.
struct ReportWorld {
    main: Source,
    files: HashMap<FileId, Bytes>,
    fonts: &'static Fonts,
    today: Datetime,
}

impl World for ReportWorld {
    fn library(&self) -> &LazyHash<Library> {
        &LIBRARY
    }

    fn book(&self) -> &LazyHash<FontBook> {
        &self.fonts.book
    }

    fn main(&self) -> FileId {
        self.main.id()
    }

    fn source(&self, id: FileId) -> FileResult<Source> {
        if id == self.main.id() {
            Ok(self.main.clone())
        } else {
            Err(FileError::NotFound(id.vpath().as_rootless_path().into()))
        }
    }

    fn file(&self, id: FileId) -> FileResult<Bytes> {
        self.files.get(&id).cloned().ok_or_else(|| FileError::NotFound(id.vpath().as_rootless_path().into()))
    }

    fn font(&self, index: usize) -> Option<Font> {
        self.fonts.fonts.get(index).cloned()
    }

    fn today(&self, _offset: Option<i64>) -> Option<Datetime> {
        Some(self.today)
    }
}

fn file_id(name: &str) -> FileId {
    FileId::new(None, VirtualPath::new(name))
}

fn datetime(t: DateTime<Utc>) -> Option<Datetime> {
    Datetime::from_ymd_hms(t.year(), t.month() as u8, t.day() as u8, t.hour() as u8, t.minute() as u8, t.second() as u8)
}

/// Typesets report `id` in `language`: A4 PDF bytes.
pub fn render(
    id: i64,
    content: &ReportContent,
    signature: Option<&Signature>,
    language: Language,
) -> Result<Vec<u8>, PdfError> {
    let fonts = FONTS.as_ref().map_err(|e| PdfError::from(e.as_str()))?;
    let view = view(content, signature, language);
    let mut files = HashMap::new();
    files.insert(file_id("report.json"), Bytes::new(view.to_string().into_bytes()));
    for (i, finding) in content.findings.iter().enumerate() {
        files.insert(file_id(&format!("chart-{i}.svg")), Bytes::new(chart::svg(&finding.evidence).into_bytes()));
    }
    // The document's date: when it was signed, else the period's end.
    let dated = signature.map_or(content.period_end, |s| s.at);
    let today = datetime(dated).ok_or_else(|| PdfError::from("the report's date is out of range"))?;
    let world = ReportWorld { main: Source::new(file_id("report.typ"), TEMPLATE.into()), files, fonts, today };
    let document: PagedDocument = typst::compile(&world).output.map_err(|errors| {
        PdfError::from(format!(
            "typesetting failed: {}",
            errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ")
        ))
    })?;
    let ident = format!("chillcloud-report-{id}");
    let options = typst_pdf::PdfOptions {
        ident: Smart::Custom(&ident),
        timestamp: Some(typst_pdf::Timestamp::new_utc(today)),
        ..Default::default()
    };
    typst_pdf::pdf(&document, &options).map_err(|errors| {
        PdfError::from(format!(
            "writing the PDF failed: {}",
            errors.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ")
        ))
    })
}

/// The words of the report, by language.
fn labels(language: Language) -> Value {
    match language {
        Language::En => json!({
            "findings": "Findings", "no_findings": "Nothing to improve was found in this period.",
            "worth": "Worth", "confidence": "Confidence", "advice": "What to do", "note": "From your engineer",
            "figures": "Operation", "figure": "Figure", "this_period": "This period", "previous_period": "Period before",
            "load_profile": "Load profile", "load": "Load", "hours": "Running hours",
            "trend": "Monthly trend", "month": "Month", "evap_approach": "Evap. approach K",
            "cond_approach": "Cond. approach K", "lift": "Lift K", "delta_t": "ΔT K",
            "alarms": "Alarms", "raised": "Raised", "grade": "Grade", "alarm": "Alarm", "cleared": "Cleared",
            "tickets": "Service tickets", "opened": "Opened", "ticket": "Ticket", "response": "Response",
            "allowed": "Allowed", "none": "None.",
        }),
        Language::Zh => json!({
            "findings": "诊断发现", "no_findings": "本期未发现需要改进的问题。",
            "worth": "价值", "confidence": "可信度", "advice": "建议措施", "note": "工程师留言",
            "figures": "运行概况", "figure": "指标", "this_period": "本期", "previous_period": "上期",
            "load_profile": "负荷分布", "load": "负荷", "hours": "运行小时",
            "trend": "月度趋势", "month": "月份", "evap_approach": "蒸发趋近 K",
            "cond_approach": "冷凝趋近 K", "lift": "提升 K", "delta_t": "温差 K",
            "alarms": "报警", "raised": "发生时间", "grade": "等级", "alarm": "报警内容", "cleared": "恢复时间",
            "tickets": "服务工单", "opened": "开单时间", "ticket": "工单", "response": "响应",
            "allowed": "时限", "none": "无。",
        }),
    }
}

fn number(value: Option<f64>, decimals: usize, unit: &str) -> String {
    value.map_or("–".to_owned(), |v| format!("{v:.decimals$}{unit}"))
}

fn minutes(m: f64, language: Language) -> String {
    match (m >= 120.0, language) {
        (true, Language::En) => format!("{:.1} h", m / 60.0),
        (true, Language::Zh) => format!("{:.1} 小时", m / 60.0),
        (false, Language::En) => format!("{m:.0} min"),
        (false, Language::Zh) => format!("{m:.0} 分钟"),
    }
}

fn kpi_rows(now: &Kpis, before: &Kpis, language: Language) -> Vec<[String; 3]> {
    let zh = language == Language::Zh;
    let words = |en: &str, zh_text: &str| if zh { zh_text.to_owned() } else { en.to_owned() };
    let mark = |estimated: bool| if estimated { words(" (estimated)", "（估算）") } else { String::new() };
    let row = |label: String, value: &dyn Fn(&Kpis) -> String| [label, value(now), value(before)];
    vec![
        row(words("Hours run", "运行小时"), &|k| format!("{:.0} / {:.0}", k.run_hours, k.hours)),
        row(words("Starts", "启动次数"), &|k| number(k.starts, 0, "")),
        row(words("Electricity kWh", "耗电量 kWh") + &mark(now.energy_estimated), &|k| number(k.energy_kwh, 0, "")),
        row(words("Cooling kWh", "供冷量 kWh") + &mark(now.cooling_estimated), &|k| number(k.cooling_kwh, 0, "")),
        row("kW/ton".to_owned(), &|k| number(k.kw_per_ton, 2, "")),
        row("COP".to_owned(), &|k| number(k.cop, 2, "")),
        row(words("Supply within 0.5 K of setpoint", "出水温度达标率（±0.5 K）"), &|k| {
            number(k.setpoint_compliance.map(|v| v * 100.0), 0, " %")
        }),
        row(words("Mean setpoint", "平均设定温度"), &|k| number(k.mean_setpoint_c, 1, " °C")),
        row(words("Mean load", "平均负荷"), &|k| number(k.mean_load_pct, 0, " %")),
        row(words("Evaporator approach", "蒸发器趋近温度"), &|k| number(k.evap_approach_k, 1, " K")),
        row(words("Condenser approach", "冷凝器趋近温度"), &|k| number(k.cond_approach_k, 1, " K")),
        row(words("Lift (condensing − evaporating)", "提升（冷凝－蒸发）"), &|k| number(k.lift_k, 1, " K")),
        row(words("Chilled-water ΔT", "冷冻水温差"), &|k| number(k.delta_t_k, 1, " K")),
    ]
}

fn fleet_view(k: &Kpis, fleet: &super::FleetComparison, language: Language) -> Value {
    let zh = language == Language::Zh;
    let words = |en: &str, zh_text: &str| if zh { zh_text.to_owned() } else { en.to_owned() };
    let pct = |v: Option<f64>| number(v.map(|v| v * 100.0), 0, " %");
    let per_hour = k.energy_kwh.zip(Some(k.run_hours).filter(|h| *h > 0.0)).map(|(e, h)| e / h);
    json!({
        "title": if zh { format!("与 {} 台同型号机组比较（中位数）", fleet.units) } else { format!("Beside {} units of the same model (median)", fleet.units) },
        "unit": words("This unit", "本机组"),
        "median": words("Their median", "同型号中位数"),
        "rows": [
            [words("Condenser approach", "冷凝器趋近温度"), number(k.cond_approach_k, 1, " K"), number(fleet.cond_approach_k, 1, " K")],
            [words("Evaporator approach", "蒸发器趋近温度"), number(k.evap_approach_k, 1, " K"), number(fleet.evap_approach_k, 1, " K")],
            [words("Lift", "提升"), number(k.lift_k, 1, " K"), number(fleet.lift_k, 1, " K")],
            [words("Supply within 0.5 K of setpoint", "出水温度达标率"), pct(k.setpoint_compliance), pct(fleet.setpoint_compliance)],
            [words("kWh per running hour", "每运行小时耗电 kWh"), number(per_hour, 0, ""), number(fleet.kwh_per_run_hour, 0, "")],
        ],
    })
}

fn finding_view(i: usize, f: &Finding, currency: &str, language: Language) -> Value {
    let zh = language == Language::Zh;
    let estimated = if f.estimated { if zh { "（估算）" } else { " (estimated)" } } else { "" };
    let worth = match (f.yearly_cost, f.yearly_kwh) {
        (Some(cost), Some(kwh)) if zh => format!("约 {cost:.0} {currency}/年（{kwh:.0} kWh/年）{estimated}"),
        (Some(cost), Some(kwh)) => format!("about {cost:.0} {currency} a year ({kwh:.0} kWh a year){estimated}"),
        _ if zh => "未估算".to_owned(),
        _ => "not estimated".to_owned(),
    };
    let confidence = match f.confidence {
        c if c >= 0.8 => {
            if zh {
                "高"
            } else {
                "high"
            }
        }
        c if c >= 0.5 => {
            if zh {
                "中"
            } else {
                "medium"
            }
        }
        _ => {
            if zh {
                "低"
            } else {
                "low"
            }
        }
    };
    let pick = |en: &str, zh_text: &str| if zh && !zh_text.is_empty() { zh_text.to_owned() } else { en.to_owned() };
    json!({
        "title": pick(&f.title, &f.title_zh),
        "summary": pick(&f.summary, &f.summary_zh),
        "advice": pick(&f.advice, &f.advice_zh),
        "reference": pick(&f.reference, &f.reference_zh),
        "worth": worth,
        "confidence": format!("{confidence} ({:.2})", f.confidence),
        "chart": format!("chart-{i}.svg"),
    })
}

/// The JSON the template reads.
fn view(content: &ReportContent, signature: Option<&Signature>, language: Language) -> Value {
    let zh = language == Language::Zh;
    let minute = |t: DateTime<Utc>| t.format("%Y-%m-%d %H:%M").to_string();
    let a = &content.assumptions;
    let assumptions = if zh {
        format!(
            "时间为 UTC。额定制冷量 {}，额定功率 {}；电价 {:.2} {}/kWh。无电表时能耗按 %RLA × 额定功率估算，并注明“估算”。每项发现的依据见其说明。",
            number(a.rated_cooling_kw, 0, " kW"),
            number(a.rated_power_kw, 0, " kW"),
            a.tariff_per_kwh,
            a.currency
        )
    } else {
        format!(
            "Times are UTC. Rated cooling {}, rated power {}; tariff {:.2} {} a kWh. Without a power meter energy is %RLA × rated power, marked estimated. Each finding states the relationship its figures rest on.",
            number(a.rated_cooling_kw, 0, " kW"),
            number(a.rated_power_kw, 0, " kW"),
            a.tariff_per_kwh,
            a.currency
        )
    };
    let signature_text = match (signature, zh) {
        (Some(s), true) => format!("审核签发：{}，{}", s.engineer, minute(s.at)),
        (Some(s), false) => format!("Reviewed and signed by {} on {}", s.engineer, minute(s.at)),
        (None, true) => "草稿：尚未经工程师审核。".to_owned(),
        (None, false) => "Draft: not yet reviewed by an engineer.".to_owned(),
    };
    json!({
        "lang": if zh { "zh" } else { "en" },
        "title": if zh { "机组运行报告" } else { "Operating report" },
        "author": signature.map_or("Chillcloud".to_owned(), |s| s.engineer.clone()),
        "unit": content.unit.name,
        "site": content.unit.site,
        "model": content.unit.model,
        "period": format!("{} ({})", content.period_label, content.time_zone),
        "headline": if zh { &content.headline_zh } else { &content.headline },
        "note": signature.map_or("", |s| s.note.as_str()),
        "labels": labels(language),
        "findings": content.findings.iter().enumerate().map(|(i, f)| finding_view(i, f, &a.currency, language)).collect::<Vec<_>>(),
        "kpis": kpi_rows(&content.kpis, &content.previous, language),
        "fleet": content.fleet.as_ref().map(|f| fleet_view(&content.kpis, f, language)),
        "load_profile": content.kpis.load_profile.iter().map(|b| {
            let band = if b.to_pct >= 100.0 { format!("≥ {:.0} %", b.from_pct) } else { format!("{:.0}–{:.0} %", b.from_pct, b.to_pct) };
            [band, format!("{:.0}", b.hours)]
        }).collect::<Vec<_>>(),
        "monthly": content.monthly.iter().map(|m| [
            m.month.clone(), number(m.evap_approach_k, 1, ""), number(m.cond_approach_k, 1, ""),
            number(m.lift_k, 1, ""), number(m.delta_t_k, 1, ""),
        ]).collect::<Vec<_>>(),
        "alarms": content.alarms.iter().map(|a| [
            minute(a.raised_at), a.grade.to_string(),
            if zh && !a.title_zh.is_empty() { a.title_zh.clone() } else { a.title.clone() },
            a.cleared_at.map_or("–".to_owned(), minute),
        ]).collect::<Vec<_>>(),
        "tickets": content.tickets.iter().map(|t| [
            minute(t.opened_at), t.grade.to_string(), t.title.clone(),
            t.response_minutes.map_or("–".to_owned(), |m| minutes(m, language)),
            minutes(t.allowed_minutes, language),
        ]).collect::<Vec<_>>(),
        "assumptions": assumptions,
        "signature": signature_text,
        "footer": format!("Chillcloud · {} · #{}", content.unit.name, content.unit.id),
    })
}
