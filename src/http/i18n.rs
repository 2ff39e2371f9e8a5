//! Languages and the texts of api.md: host status descriptions and error messages, in Simplified
//! Chinese (the default) and English.

use axum::http::HeaderMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    Zh,
    En,
}

impl Lang {
    /// `Blueking-Language`, else the first tag of `Accept-Language`; `en` in any case and any
    /// `en-…` region selects English, anything else Chinese.
    pub fn of(headers: &HeaderMap) -> Lang {
        let value = headers
            .get("blueking-language")
            .or_else(|| headers.get("accept-language"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let first = value.split([',', ';']).next().unwrap_or("").trim();
        let lang = first.split(['-', '_']).next().unwrap_or("");
        if lang.eq_ignore_ascii_case("en") {
            Lang::En
        } else {
            Lang::Zh
        }
    }

    pub fn pick<'a>(self, zh: &'a str, en: &'a str) -> &'a str {
        match self {
            Lang::Zh => zh,
            Lang::En => en,
        }
    }
}

/// api.md, "Host status codes": (code, zh, en).
const HOST_STATUSES: &[(i32, &str, &str)] = &[
    (0, "未知错误", "Unknown Error"),
    (1, "Agent异常", "Abnormal Agent"),
    (2, "无效主机", "Invalid Host"),
    (3, "上次已成功", "Successful Last Time"),
    (5, "等待执行", "Waiting"),
    (7, "正在执行", "Running"),
    (9, "执行成功", "Success"),
    (11, "执行失败", "Failed"),
    (12, "任务下发失败", "Task send failed"),
    (13, "任务超时", "Task Timeout"),
    (15, "任务日志错误", "Error in Log"),
    (16, "GSE脚本日志超时", "Script Log Timeout"),
    (17, "GSE文件日志超时", "File Log Timeout"),
    (18, "Agent未安装", "Agent not installed"),
    (101, "脚本执行失败", "Script Execution Failed"),
    (102, "脚本执行超时", "Script Execution Timeout"),
    (103, "脚本执行被终止", "Script Execution Terminated"),
    (104, "脚本返回码非零", "Non-zero Exit Code"),
    (202, "文件传输失败", "File Transmission Failed"),
    (203, "源文件不存在", "Source File Not Exists"),
    (
        301,
        "文件任务系统错误-未分类的",
        "Unclassified File Failure",
    ),
    (303, "文件任务超时", "File Transmission Timeout"),
    (310, "Agent异常", "Abnormal Agent"),
    (311, "用户名不存在", "User not exist"),
    (312, "用户密码错误", "User password incorrect"),
    (320, "文件获取失败", "File pull failed"),
    (321, "文件超出限制", "File size exceeds limit"),
    (329, "文件传输错误", "File Transmission Error"),
    (399, "任务执行出错", "Execution Error"),
    (403, "任务强制终止成功", "Force Terminated"),
    (404, "任务强制终止失败", "Force Terminate Failed"),
    (500, "未知状态", "Unknown"),
];

pub fn is_host_status(code: i32) -> bool {
    HOST_STATUSES.iter().any(|(c, _, _)| *c == code)
}

/// The description of a host status; a code outside the table (events may carry any int) is
/// described as status 500 "Unknown".
pub fn host_status_desc(code: i32, lang: Lang) -> &'static str {
    let (_, zh, en) = HOST_STATUSES
        .iter()
        .find(|(c, _, _)| *c == code)
        .unwrap_or(&(500, "未知状态", "Unknown"));
    lang.pick(zh, en)
}
