// Every UI string, in English and Chinese, and the formatting that depends on the language.

export const dict = {
  en: {
    app: 'Chillcloud',
    units: 'Units', alarms: 'Alarms', tickets: 'Tickets',
    signin: 'Sign in', signout: 'Sign out', login: 'User name', password: 'Password',
    signin_bad: 'Wrong user name or password.', signin_slow: 'Too many failed attempts. Try again later.',
    signin_hint: 'Your chillers, on your phone.',
    lang_other: '中文',
    loading: 'Loading…', retry: 'Try again', cancel: 'Cancel',
    offline: 'No connection. Check the network and try again.',
    error: 'Something went wrong: {e}', not_found: 'Not found.',
    // fleet
    fleet_none: 'No units yet.',
    fleet_all_ok: '{n} units: all OK', fleet_all_ok_1: '1 unit: OK',
    fleet_attention: '{k} of {n} need attention', fleet_attention_1: '{k} of {n} needs attention',
    search: 'Search name or site', show_more: 'Show {n} more', shown: 'Showing {a} of {n}',
    open_alarms: '{n} open alarms', open_alarms_1: '1 open alarm',
    seen: 'heard from {a}', never_seen: 'never heard from',
    // status
    st_running: 'Running', st_stopped: 'Stopped', st_alarm: 'Alarm', st_offline: 'Offline', st_stale: 'No recent data',
    st_unknown: 'Unknown',
    // unit page
    key_values: 'Now', all_points: 'All readings',
    live_on: 'Live', live_off: 'Reconnecting…', live_wait: 'Connecting…',
    bad: 'BAD', uncertain: 'UNCERTAIN', never: 'never',
    tap_to_chart: 'Tap a reading to chart it.', site: 'Site', model: 'Model',
    on: 'On', off: 'Off', details: 'Details', derived: 'calculated',
    // chart
    reset: 'Reset zoom', no_data: 'No data in this range', dropped: 'Data lost on the way ({n} readings)',
    zoom_hint: 'Drag across the chart or pinch to zoom. Tap for a value.', raised_mark: 'Alarm',
    range_1h: '1 h', range_6h: '6 h', range_24h: '24 h', range_7d: '7 d', range_30d: '30 d',
    // alarms
    al_open: 'Open', al_all: 'All', al_none_open: 'No open alarms. All clear.', al_none: 'No alarms.',
    grade_1: 'Critical', grade_2: 'Major', grade_3: 'Minor', grade_4: 'Warning', grade_n: 'Grade {n}',
    as_active: 'Active', as_acknowledged: 'Acknowledged', as_cleared: 'Cleared, not acknowledged', as_closed: 'Closed',
    muted: 'muted (maintenance)', flapping: 'flapping', shelved: 'shelved until {t}', times: '×{n}',
    site_alarm: 'whole site', raised: 'Raised', last_raised: 'Last raised', cleared: 'Cleared',
    acknowledged_by: 'Acknowledged by {w}', closed: 'Closed',
    ack: 'Acknowledge', ack_confirm: 'Yes, acknowledge', ack_comment: 'Comment (optional)',
    ack_q: 'Acknowledge this alarm? Paging stops for everyone.', ack_done: 'Acknowledged.',
    capture: 'Fault-moment data', capture_wait: 'Being recorded; ready after {t}.', capture_none: 'No data was captured.',
    events: 'History', ev_raised: 'raised', ev_reraised: 'raised again', ev_regraded: 'grade changed',
    ev_cleared: 'cleared', ev_acknowledged: 'acknowledged', ev_shelved: 'shelved', ev_unshelved: 'unshelved',
    for_unit: 'Unit alarms', all_units: 'All units',
    // tickets
    tk_open: 'Open', tk_closed: 'Closed', tk_all: 'All', tk_none: 'No tickets.',
    ts_open: 'New', ts_responded: 'Responded', ts_on_site: 'On site', ts_resolved: 'Resolved', ts_closed: 'Closed',
    clock_respond: 'Respond', clock_on_site: 'On site', clock_escalate: 'Resolve or escalate',
    left: '{d} left', overdue: 'overdue {d}', done_at: 'done {t}', breached: 'breached', not_needed: 'not needed', untriaged: 'if a site visit',
    triage: 'Triage', tr_remote: 'remote', tr_site_visit: 'site visit', parts: 'Parts and tools',
    assignee: 'Engineer', unassigned: 'unassigned', opened: 'Opened', from_alarm: 'From alarm',
    comment: 'Comment', act_respond: 'Responded', act_on_site: 'On site', act_note: 'Add note', act_resolve: 'Resolve',
    confirm: 'Confirm', note_needed: 'Write the note first.', saved: 'Saved.',
    reports: 'Reports', report: 'Operating report', reports_to_review: 'Reports to review', n_findings: '{n} findings', reports_none: 'No report yet.', unit_reports: 'Operating reports',
    rs_draft: 'Draft', rs_signed: 'Signed', report_draft_30: 'Draft a report of the last 30 days',
    report_pdf: 'PDF', findings: 'Findings', findings_none: 'Nothing to improve was found in this period.',
    not_estimated: 'Not estimated', worth_year: 'About {c} {cur} a year ({k} kWh)', estimated: '(estimated)',
    confidence: 'confidence', advice: 'What to do:', finding_drop: 'Leave this finding out',
    engineer_note: 'From your engineer', signed_by: 'Signed by {w}, {t}', review: 'Review',
    save: 'Save', report_sign: 'Sign and send', report_signed: 'Signed: the owner can read it now.',
    operation: 'Operation', this_period: 'This period', previous_period: 'Period before',
    run_hours: 'Hours run', starts: 'Starts', energy_kwh: 'Electricity kWh', compliance: 'Supply within 0.5 K',
    mean_load: 'Mean load', evap_approach: 'Evaporator approach', cond_approach: 'Condenser approach', lift: 'Lift',
    fleet_compare: 'Beside {n} units of the same model', this_unit: 'This unit', fleet_median: 'Their median',
    kwh_per_hour: 'kWh per running hour',
    load_profile: 'Running hours by load', responded_in: 'responded in {m} min (allowed {a})',
    satisfaction: 'Customer score {n}/5',
    tk_opened: 'opened', tk_assigned: 'assigned', tk_triaged: 'triaged', tk_responded: 'responded',
    tk_on_site: 'on site', tk_note: 'note', tk_resolved: 'resolved', tk_closed_ev: 'closed', tk_breached: 'clock breached',
    tk_feedback: 'customer score',
    // remote control
    ctl_title: 'Remote control', ctl_hint: 'Changes go to the chiller\'s controller, each after you review and confirm it.',
    ctl_gw_offline: 'The site\'s gateway is offline: commands cannot reach the unit now.',
    ctl_nobounds: 'No limits announced: update the gateway', ctl_change: 'Change',
    ctl_start: 'Start', ctl_stop: 'Stop', ctl_on: 'On', ctl_off: 'Off', ctl_en_1: 'On: may run', ctl_en_0: 'Off: stopped',
    ctl_new: 'New value', ctl_next: 'Review', ctl_range: 'Allowed: {min} to {max}{u}, in steps of {step}.',
    ctl_nan: 'Enter a number.', ctl_out: '{v} is outside the allowed range, {min} to {max}{u}.',
    ctl_off_step: '{v} is between steps of {step}{u}: use {a} or {b}.', ctl_same: 'It is {v} already.',
    ctl_q_set: 'Change {p}?', ctl_q_start: 'Start the chiller?', ctl_q_stop: 'Stop the chiller?',
    ctl_now: 'Now', ctl_to: 'New',
    ctl_warn: 'The controller applies it at once. Check the value: a wrong one can spoil the customer\'s process.',
    ctl_warn_start: 'The controller starts only with chilled-water flow proven and no trip active.',
    ctl_warn_stop: 'The chiller stops: the process gets no cooling until someone starts it again.',
    ctl_yes_set: 'Yes, set {v}', ctl_yes_start: 'Yes, start', ctl_yes_stop: 'Yes, stop',
    ctl_sending: 'Sending…', ctl_sent: 'Sent. Waiting for the chiller to confirm…',
    ctl_done: 'Done: now reads {v}.', ctl_refused: 'Refused: {m}', ctl_failed: 'Failed: {m}',
    ctl_expired: 'Expired: it reached the unit too late and was not written.', ctl_unanswered: 'No answer: {m}',
    ctl_slow: 'No answer yet. Check the reading; the list below shows the outcome when it comes.',
    ctl_forbidden: 'Your role may not operate units.',
    ctl_recent: 'Recent commands', ctl_none: 'No commands yet.',
    cs_sending: 'Sending', cs_sent: 'Sent', cs_done: 'Done', cs_refused: 'Refused', cs_failed: 'Failed', cs_expired: 'Expired',
    cs_unanswered: 'No answer',
    // fleet (service staff): gateways and their configuration held by the server
    gateways: 'Gateways', gateways_none: 'No gateways yet.', online: 'Online', offline_since: 'Offline since {t}',
    n_units: '{n} units', next_page: 'Next page',
    gs_local: 'Own file', gs_in_sync: 'In sync', gs_on_trial: 'On trial', gs_sending: 'Sending', gs_waiting: 'Waiting for it',
    gs_refused: 'Refused', gs_rolled_back: 'Rolled back',
    cfg_desired: 'Should run', cfg_running: 'Runs', cfg_version: 'version {n}', cfg_local: 'its own file',
    cfg_drift: 'The gateway does not run the configuration it should.',
    cfg_edit: 'Change the configuration', cfg_text: 'Configuration (TOML)', cfg_note: 'Why (shown in the history)',
    cfg_help: 'Lines, devices with their points and intervals, queue: as in the gateway\'s file. Checked before it is sent; if a device that answered stops answering, the gateway goes back to what it ran before.',
    cfg_template: '[[devices]]\nid = "chiller-1"\nprofile = "trane-ch530"\nhost = "192.168.10.21"\nunit_id = 1\n',
    cfg_save: 'Check and send', cfg_sent: 'Version {n} sent.', cfg_history: 'Versions', cfg_none: 'No version yet: the gateway runs its own file.',
    co_applied: 'Applied', co_refused: 'Refused', co_rolled_back: 'Rolled back',
    manage: 'Manage', gateways_sub: 'Connection and configuration of each site\'s gateway',
    people: 'People', people_sub: 'Who can be paged: phones, e-mail, language', people_none: 'Nobody yet.',
    rotations: 'On-call rotations', rotations_sub: 'Who is on call when', rotations_none: 'No rotation yet.',
    person_add: 'Add a person', name: 'Name', phone: 'Mobile (+86…)', email: 'E-mail', lang_field: 'Language',
    rotation_add: 'Add a rotation', weekly: 'Weekly', daily: 'Daily', on_call_now: 'On call now:', overrides: 'Stand-ins:',
    period: 'Turns', handover: 'First handover', members_order: 'Members, in the order of their turns (tick in order):',
    contacts: 'Contacts', contacts_none: 'No contacts at this site yet.', person: 'Person', role: 'Role',
    role_owner: 'Owner', role_service: 'Service team', role_manager: 'Manager',
    paging: 'Paging', rotation: 'On-call rotation', no_rotation: '(none: the whole service team)',
    policy_help: 'For each grade: who is paged how many minutes after an alarm starts, and how often it repeats until someone acknowledges.',
    aud_on_call: 'On call', aud_service: 'Service team', aud_owner: 'Owner', aud_manager: 'Managers', aud_chat: 'Team chat rooms',
    via: 'Reach them by', via_own: 'Their own channels',
    after_min: 'After (minutes)', repeat_min: 'Repeat every (minutes; empty: never)', add_level: 'Add a level', own_policy: 'this site\'s own',
    // provisioning, sites, units' settings, accounts
    provision: 'Provision a gateway', provision_do: 'Provision', gateway_id: 'Gateway id (letters, digits, - and _)',
    provision_help: 'Makes the gateway\'s MQTT password and its configuration file. Install both on the box; set its devices here afterwards, or paste what `chillcloud-gateway scan` prints.',
    download: 'Download {f}', password_once: 'The password of {id}: it is shown this once. Download the files now.',
    install_help: 'On the box: /etc/chillcloud/gateway.toml and /etc/chillcloud/gateway.secret (mode 0640, group chillcloud-gateway), then systemctl restart chillcloud-gateway.',
    site: 'Site', units_none: 'No units reported yet.', unit_settings: 'rules, maintenance, share links',
    owner_org: 'Owned by', no_owner: '(no customer)', renew_password: 'New MQTT password',
    renew_confirm: 'Give {id} a new password? The old one is refused from its next connection: install the new one on the box.',
    maintenance: 'Maintenance windows', maintenance_none: 'No maintenance planned.', maintenance_add: 'Plan maintenance',
    whole_site: 'Whole site', unit_field: 'Unit', from_time: 'From', to_time: 'Until', reason: 'Reason',
    rules: 'Alarm rules', rules_help: 'The rules in force for this unit. A change applies to this unit only; reset goes back to the maker\'s rule.',
    rules_skipped: 'Not applied here:', grade_field: 'Grade', rule_off: 'off for this unit', rule_reset: 'Reset',
    rule_fields: 'Other fields (JSON)', rule_json: 'The other fields are not valid JSON.', rule_same: 'Nothing differs from the rule in force.',
    shares: 'Share links', shares_help: 'A read-only page of this unit\'s operating record, without the site\'s name, for someone without an account.',
    shares_none: 'No live share link.', share_label: 'What they read instead of the site\'s name', share_days: 'Days until it expires (1–90)',
    share_make: 'Make a link', share_once: 'The link is shown this once: copy it now.', until: 'until {t}', revoke: 'Revoke',
    accounts: 'Organisations and users', accounts_sub: 'Customers, staff, invitations', organisations: 'Organisations',
    org_add: 'Add an organisation', org_name: 'Name', org_kind: 'Kind', org_customer: 'Customer', org_service: 'Service organisation',
    users: 'Users', invite: 'Invite a user', invite_do: 'Invite', organisation: 'Organisation',
    invite_once: 'Send {login} this link (valid 7 days, once) to choose a password:',
    user_active: 'active', user_invited: 'invited', disable: 'Disable', disable_confirm: 'Disable {name}? They are signed out at once.',
    role_admin: 'Administrator', role_engineer: 'Engineer', role_sales: 'Sales', role_duty: 'Duty staff',
    standin_add: 'Someone else on call for a while', audit: 'Audit log', audit_help: 'Sign-ins and every change made through the API, newest first.',
    tokens: 'API tokens', tokens_help: 'For integrations: a token acts as you. It is shown once when made.',
    token_name: 'What it is for', token_make: 'Make a token', token_once: 'The token is shown this once: copy it now.',
    token_used: 'last used {t}', token_unused: 'never used',
    user_disabled: 'disabled', done: 'Done', external_broker: 'With an external Mosquitto: its password-file line',
    // every user's own notifications: channels in order, quiet hours, push on this device
    notifications: 'Notifications', notifications_sub: 'How alarms reach you, quiet hours, push on this phone',
    np_not_listed: 'You are not on a paging list; ask your service manager to add you.', np_for: 'Paged as {name}',
    np_policy: 'Grade 1 and 2 alarms always reach you as the site\'s policy says; quiet hours hold grade 3 and 4 messages until they end.',
    np_channels: 'How to reach you', np_all: 'Every ticked way is used at once.',
    ch_push: 'Push to this app', ch_sms: 'SMS', ch_voice: 'Voice call', ch_email: 'E-mail',
    ch_na_push: 'Turn on push on this device first (below).',
    ch_na_sms: 'Not available: no mobile number or no SMS service. Ask your service manager.',
    ch_na_voice: 'Not available: no mobile number or no voice service. Ask your service manager.',
    ch_na_email: 'Not available: no e-mail address or no mail service. Ask your service manager.',
    test_send: 'Send me a test', sending: 'Sending…', test_sent: 'Test sent: it should arrive within a minute.',
    quiet: 'Quiet hours', quiet_on: 'Quiet hours on', timezone: 'Time zone',
    push_title: 'Push on this device', push_help: 'Alarms show on this phone\'s lock screen, with a button to acknowledge them.',
    push_on: 'Push is on for this device.', push_off: 'Push is off for this device.',
    push_enable: 'Turn on push', push_disable: 'Turn off push', push_devices: 'Devices with push', push_this: 'this device', push_remove: 'Remove',
    push_unsupported: 'This browser cannot receive push messages. On an iPhone, add Chillcloud to the home screen and open it from there.',
    push_no_key: 'Push is not set up on this server.', push_no_sw: 'Push is not ready in this browser. Reload the page and try again.',
    push_denied: 'Notifications are blocked for this site. Allow them in the browser\'s site settings, then try again.',
    push_failed: 'Push could not be turned on: {e}',
    push_timeout: 'the browser\'s push service did not answer. Some phones cannot use push (e.g. without Google services): use SMS or a voice call instead.',
    push_save_hint: '“Push to this app” is ticked above: save to be paged by push.',
    // the team's chat rooms of a site
    chat_rooms: 'Team chat rooms', chat_none: 'No chat room yet.',
    chat_help: 'Alarms of this site are posted to these group chats by the group\'s robot. Its address and secret are not shown again once saved.',
    chat_all_sites: 'All sites', chat_this_site: 'This site ({id})', chat_signed: 'signed', chat_scope: 'For',
    kind_wecom: 'WeCom', kind_dingtalk: 'DingTalk', kind_feishu: 'Feishu / Lark', kind_slack: 'Slack',
    chat_test: 'Send a test', chat_test_sent: 'Test message sent.', chat_delete: 'Delete',
    chat_delete_q: 'Delete the chat room {name}? Alarms stop going to it.',
    chat_delete_all: 'Delete the chat room {name}? It serves every site: alarms of all sites stop going to it.',
    chat_add: 'Add a chat room', chat_add_do: 'Add', chat_kind: 'App', chat_name: 'Name (e.g. the group\'s)',
    chat_url: 'The robot\'s webhook address', chat_secret: 'Signing secret (if the robot signs)',
    // time
    now: 'just now', s_ago: '{n} s ago', m_ago: '{n} min ago', h_ago: '{n} h ago', d_ago: '{n} d ago',
    dur_s: '{n} s', dur_m: '{n} min', dur_h: '{n} h', dur_hm: '{h} h {m} min', dur_d: '{n} d', dur_dh: '{d} d {h} h',
  },
  zh: {
    app: 'Chillcloud 冷云',
    units: '机组', alarms: '报警', tickets: '服务单',
    signin: '登录', signout: '退出', login: '用户名', password: '密码',
    signin_bad: '用户名或密码错误。', signin_slow: '失败次数过多，请稍后再试。',
    signin_hint: '手机上看机组。',
    lang_other: 'EN',
    loading: '加载中…', retry: '重试', cancel: '取消',
    offline: '网络不可用，请检查网络后重试。',
    error: '出错了：{e}', not_found: '未找到。',
    fleet_none: '还没有机组。',
    fleet_all_ok: '{n} 台机组：全部正常', fleet_all_ok_1: '1 台机组：正常',
    fleet_attention: '{n} 台中 {k} 台需要关注', fleet_attention_1: '{n} 台中 {k} 台需要关注',
    search: '搜索名称或站点', show_more: '再显示 {n} 台', shown: '显示 {a} / {n}',
    open_alarms: '{n} 条未关闭报警', open_alarms_1: '1 条未关闭报警',
    seen: '最后通讯 {a}', never_seen: '从未通讯',
    st_running: '运行', st_stopped: '停机', st_alarm: '报警', st_offline: '离线', st_stale: '数据未更新',
    st_unknown: '未知',
    key_values: '当前', all_points: '全部读数',
    live_on: '实时', live_off: '正在重连…', live_wait: '连接中…',
    bad: '故障', uncertain: '可疑', never: '无',
    tap_to_chart: '点击读数查看曲线。', site: '站点', model: '型号',
    on: '开', off: '关', details: '详情', derived: '计算值',
    reset: '还原', no_data: '此时段无数据', dropped: '传输中丢失数据（{n} 条）',
    zoom_hint: '在曲线上拖动或双指缩放可放大，点击查看数值。', raised_mark: '报警',
    range_1h: '1小时', range_6h: '6小时', range_24h: '24小时', range_7d: '7天', range_30d: '30天',
    al_open: '未关闭', al_all: '全部', al_none_open: '没有未关闭的报警，一切正常。', al_none: '没有报警。',
    grade_1: '严重', grade_2: '重要', grade_3: '次要', grade_4: '提示', grade_n: '{n} 级',
    as_active: '报警中', as_acknowledged: '已确认', as_cleared: '已恢复，未确认', as_closed: '已关闭',
    muted: '已屏蔽（维护中）', flapping: '频繁波动', shelved: '搁置至 {t}', times: '×{n}',
    site_alarm: '整个站点', raised: '报警时间', last_raised: '最近报警', cleared: '恢复时间',
    acknowledged_by: '{w} 已确认', closed: '关闭时间',
    ack: '确认报警', ack_confirm: '确定确认', ack_comment: '备注（可选）',
    ack_q: '确认此报警？所有人的通知都将停止。', ack_done: '已确认。',
    capture: '故障时刻数据', capture_wait: '正在记录，{t} 后可查看。', capture_none: '没有记录到数据。',
    events: '记录', ev_raised: '报警', ev_reraised: '再次报警', ev_regraded: '等级变更',
    ev_cleared: '恢复', ev_acknowledged: '确认', ev_shelved: '搁置', ev_unshelved: '取消搁置',
    for_unit: '本机组报警', all_units: '全部机组',
    tk_open: '未关闭', tk_closed: '已关闭', tk_all: '全部', tk_none: '没有服务单。',
    ts_open: '新建', ts_responded: '已响应', ts_on_site: '已到场', ts_resolved: '已解决', ts_closed: '已关闭',
    clock_respond: '响应', clock_on_site: '到场', clock_escalate: '解决或上报',
    left: '剩余 {d}', overdue: '超时 {d}', done_at: '已完成 {t}', breached: '已超时', not_needed: '无需', untriaged: '需上门时计时',
    triage: '处理方式', tr_remote: '远程', tr_site_visit: '上门', parts: '备件和工具',
    assignee: '工程师', unassigned: '未指派', opened: '创建时间', from_alarm: '来源报警',
    comment: '备注', act_respond: '已响应', act_on_site: '已到场', act_note: '添加记录', act_resolve: '已解决',
    confirm: '确定', note_needed: '请先填写记录。', saved: '已保存。',
    reports: '报告', report: '运行报告', reports_to_review: '待审核的报告', n_findings: '{n} 项发现', reports_none: '还没有报告。', unit_reports: '运行报告',
    rs_draft: '草稿', rs_signed: '已签发', report_draft_30: '生成最近 30 天的报告草稿',
    report_pdf: 'PDF', findings: '诊断发现', findings_none: '本期未发现需要改进的问题。',
    not_estimated: '未估算', worth_year: '约 {c} {cur}/年（{k} kWh）', estimated: '（估算）',
    confidence: '可信度', advice: '建议措施：', finding_drop: '不列入此项',
    engineer_note: '工程师留言', signed_by: '{w} 签发于 {t}', review: '审核',
    save: '保存', report_sign: '签发并发送', report_signed: '已签发：业主现在可以查看。',
    operation: '运行概况', this_period: '本期', previous_period: '上期',
    run_hours: '运行小时', starts: '启动次数', energy_kwh: '耗电量 kWh', compliance: '出水温度达标率（±0.5 K）',
    mean_load: '平均负荷', evap_approach: '蒸发器趋近温度', cond_approach: '冷凝器趋近温度', lift: '提升',
    fleet_compare: '与 {n} 台同型号机组比较', this_unit: '本机组', fleet_median: '同型号中位数',
    kwh_per_hour: '每运行小时耗电 kWh',
    load_profile: '各负荷段运行小时', responded_in: '{m} 分钟响应（时限 {a}）',
    satisfaction: '客户评分 {n}/5',
    tk_opened: '创建', tk_assigned: '指派', tk_triaged: '分诊', tk_responded: '响应',
    tk_on_site: '到场', tk_note: '记录', tk_resolved: '解决', tk_closed_ev: '关闭', tk_breached: '超时',
    tk_feedback: '客户评分',
    ctl_title: '远程控制', ctl_hint: '更改会发送到机组控制器，每次都需先核对并确认。',
    ctl_gw_offline: '站点网关离线：命令目前无法送达机组。',
    ctl_nobounds: '网关未提供限值：请升级网关', ctl_change: '修改',
    ctl_start: '启动', ctl_stop: '停机', ctl_on: '开', ctl_off: '关', ctl_en_1: '开：允许运行', ctl_en_0: '关：停机',
    ctl_new: '新值', ctl_next: '核对', ctl_range: '允许范围：{min} 至 {max}{u}，步长 {step}。',
    ctl_nan: '请输入数字。', ctl_out: '{v} 超出允许范围 {min} 至 {max}{u}。',
    ctl_off_step: '{v} 不在步长 {step}{u} 上：请用 {a} 或 {b}。', ctl_same: '当前已经是 {v}。',
    ctl_q_set: '修改{p}？', ctl_q_start: '启动机组？', ctl_q_stop: '停止机组？',
    ctl_now: '当前', ctl_to: '改为',
    ctl_warn: '控制器会立即执行。请核对数值：错误的值可能影响客户的生产工艺。',
    ctl_warn_start: '只有在冷冻水流量已确认且没有故障时，控制器才会启动。',
    ctl_warn_stop: '机组将停机：在有人重新启动前，工艺将没有冷量。',
    ctl_yes_set: '确定改为 {v}', ctl_yes_start: '确定启动', ctl_yes_stop: '确定停机',
    ctl_sending: '发送中…', ctl_sent: '已发送，等待机组确认…',
    ctl_done: '完成：当前读数 {v}。', ctl_refused: '被拒绝：{m}', ctl_failed: '失败：{m}',
    ctl_expired: '已过期：到达机组太晚，未写入。', ctl_unanswered: '无应答：{m}',
    ctl_slow: '尚无应答。请查看读数；结果到达后会显示在下方列表中。',
    ctl_forbidden: '您的角色无权操作机组。',
    ctl_recent: '最近的命令', ctl_none: '还没有命令。',
    cs_sending: '发送中', cs_sent: '已发送', cs_done: '完成', cs_refused: '被拒绝', cs_failed: '失败', cs_expired: '已过期',
    cs_unanswered: '无应答',
    gateways: '网关', gateways_none: '还没有网关。', online: '在线', offline_since: '自{t}离线',
    n_units: '{n}台机组', next_page: '下一页',
    gs_local: '本地文件', gs_in_sync: '已同步', gs_on_trial: '试运行中', gs_sending: '发送中', gs_waiting: '等待上线',
    gs_refused: '被拒绝', gs_rolled_back: '已回滚',
    cfg_desired: '应运行', cfg_running: '正在运行', cfg_version: '版本{n}', cfg_local: '本地文件',
    cfg_drift: '网关运行的配置与应运行的不一致。',
    cfg_edit: '修改配置', cfg_text: '配置（TOML）', cfg_note: '修改原因（记入历史）',
    cfg_help: '串行线路、设备及其点位和周期、队列：与网关配置文件相同。发送前会检查；如果原本应答的设备不再应答，网关会自动退回之前的配置。',
    cfg_template: '[[devices]]\nid = "chiller-1"\nprofile = "trane-ch530"\nhost = "192.168.10.21"\nunit_id = 1\n',
    cfg_save: '检查并发送', cfg_sent: '版本{n}已发送。', cfg_history: '版本', cfg_none: '还没有版本：网关运行其本地文件。',
    co_applied: '已应用', co_refused: '被拒绝', co_rolled_back: '已回滚',
    manage: '管理', gateways_sub: '各站点网关的连接与配置',
    people: '人员', people_sub: '可被呼叫的人：电话、邮箱、语言', people_none: '还没有人员。',
    rotations: '值班轮换', rotations_sub: '谁在何时值班', rotations_none: '还没有值班轮换。',
    person_add: '添加人员', name: '姓名', phone: '手机（+86…）', email: '邮箱', lang_field: '语言',
    rotation_add: '添加值班轮换', weekly: '每周', daily: '每天', on_call_now: '当前值班：', overrides: '代班：',
    period: '轮换周期', handover: '首次交接', members_order: '成员（按值班顺序依次勾选）：',
    contacts: '联系人', contacts_none: '该站点还没有联系人。', person: '人员', role: '角色',
    role_owner: '业主', role_service: '服务团队', role_manager: '经理',
    paging: '呼叫', rotation: '值班轮换', no_rotation: '（无：整个服务团队）',
    policy_help: '每个等级：报警开始后几分钟呼叫谁，以及在有人确认前多久重复一次。',
    aud_on_call: '值班人员', aud_service: '服务团队', aud_owner: '业主', aud_manager: '经理', aud_chat: '团队群聊',
    via: '通知方式', via_own: '各人自选的方式',
    after_min: '延迟（分钟）', repeat_min: '重复间隔（分钟；留空则不重复）', add_level: '添加一级', own_policy: '本站点自定义',
    provision: '开通网关', provision_do: '开通', gateway_id: '网关编号（字母、数字、- 和 _）',
    provision_help: '生成网关的 MQTT 密码和配置文件，两者都装到网关上；之后在这里设置设备，或粘贴 `chillcloud-gateway scan` 的输出。',
    download: '下载 {f}', password_once: '{id} 的密码只显示这一次，请现在下载文件。',
    install_help: '在网关上：/etc/chillcloud/gateway.toml 和 /etc/chillcloud/gateway.secret（权限 0640，属组 chillcloud-gateway），然后 systemctl restart chillcloud-gateway。',
    site: '站点', units_none: '还没有上报的机组。', unit_settings: '规则、维护、分享链接',
    owner_org: '所属客户', no_owner: '（无客户）', renew_password: '重新生成 MQTT 密码',
    renew_confirm: '为 {id} 生成新密码？旧密码从下次连接起失效：请在网关上装好新密码。',
    maintenance: '维护时段', maintenance_none: '没有计划中的维护。', maintenance_add: '安排维护',
    whole_site: '整个站点', unit_field: '机组', from_time: '开始', to_time: '结束', reason: '原因',
    rules: '报警规则', rules_help: '本机组生效的规则。修改只对本机组有效；还原即恢复厂家规则。',
    rules_skipped: '此处不适用：', grade_field: '等级', rule_off: '本机组停用', rule_reset: '还原',
    rule_fields: '其他字段（JSON）', rule_json: '其他字段不是有效的 JSON。', rule_same: '与生效规则没有不同。',
    shares: '分享链接', shares_help: '本机组运行记录的只读页面，不含站点名称，供没有账号的人查看。',
    shares_none: '没有有效的分享链接。', share_label: '代替站点名称显示的文字', share_days: '有效天数（1–90）',
    share_make: '生成链接', share_once: '链接只显示这一次，请现在复制。', until: '至 {t}', revoke: '撤销',
    accounts: '组织与用户', accounts_sub: '客户、员工、邀请', organisations: '组织',
    org_add: '添加组织', org_name: '名称', org_kind: '类型', org_customer: '客户', org_service: '服务组织',
    users: '用户', invite: '邀请用户', invite_do: '邀请', organisation: '组织',
    invite_once: '把这个链接发给 {login}（7 天内有效，仅一次）以设置密码：',
    user_active: '已激活', user_invited: '已邀请', disable: '停用', disable_confirm: '停用 {name}？其登录立即失效。',
    role_admin: '管理员', role_engineer: '工程师', role_sales: '销售', role_duty: '值班人员',
    standin_add: '临时代班', audit: '审计日志', audit_help: '登录记录及通过 API 所做的每项修改，最新的在前。',
    tokens: 'API 令牌', tokens_help: '用于系统集成：令牌代表您本人操作，仅在生成时显示一次。',
    token_name: '用途', token_make: '生成令牌', token_once: '令牌只显示这一次，请现在复制。',
    token_used: '最近使用 {t}', token_unused: '从未使用',
    user_disabled: '已停用', done: '完成', external_broker: '使用外部 Mosquitto 时：其密码文件中的一行',
    notifications: '通知', notifications_sub: '报警如何通知您、免打扰时段、本机推送',
    np_not_listed: '您不在任何呼叫名单上；请联系服务经理添加。', np_for: '以 {name} 的身份接收呼叫',
    np_policy: '1 级和 2 级报警始终按站点的呼叫策略通知您；免打扰时段内，3 级和 4 级消息暂缓，到时段结束后再发送。',
    np_channels: '通知方式', np_all: '勾选的方式同时使用。',
    ch_push: '本应用推送', ch_sms: '短信', ch_voice: '语音电话', ch_email: '邮件',
    ch_na_push: '请先在下方为本设备开启推送。',
    ch_na_sms: '不可用：没有手机号码或没有短信服务。请联系服务经理。',
    ch_na_voice: '不可用：没有手机号码或没有语音服务。请联系服务经理。',
    ch_na_email: '不可用：没有邮箱地址或没有邮件服务。请联系服务经理。',
    test_send: '给我发测试', sending: '发送中…', test_sent: '测试已发送，应在一分钟内收到。',
    quiet: '免打扰时段', quiet_on: '开启免打扰', timezone: '时区',
    push_title: '本设备推送', push_help: '报警会显示在本手机的锁屏上，并带有确认按钮。',
    push_on: '本设备已开启推送。', push_off: '本设备未开启推送。',
    push_enable: '开启推送', push_disable: '关闭推送', push_devices: '已开启推送的设备', push_this: '本设备', push_remove: '移除',
    push_unsupported: '此浏览器无法接收推送。iPhone 上请先把 Chillcloud 添加到主屏幕，再从主屏幕打开。',
    push_no_key: '服务器尚未配置推送。', push_no_sw: '本浏览器的推送尚未就绪，请刷新页面后重试。',
    push_denied: '此网站的通知已被屏蔽。请在浏览器的网站设置中允许通知后重试。',
    push_failed: '无法开启推送：{e}',
    push_timeout: '浏览器的推送服务没有响应。部分手机（如没有谷歌服务的）无法使用推送：请改用短信或语音电话。',
    push_save_hint: '已在上方勾选“本应用推送”：保存后才会通过推送呼叫您。',
    chat_rooms: '团队群聊', chat_none: '还没有群聊。',
    chat_help: '本站点的报警会由群机器人发到这些群聊。机器人的地址和密钥保存后不再显示。',
    chat_all_sites: '所有站点', chat_this_site: '本站点（{id}）', chat_signed: '已加签', chat_scope: '适用于',
    kind_wecom: '企业微信', kind_dingtalk: '钉钉', kind_feishu: '飞书', kind_slack: 'Slack',
    chat_test: '发送测试', chat_test_sent: '测试消息已发送。', chat_delete: '删除',
    chat_delete_q: '删除群聊 {name}？报警将不再发到该群。',
    chat_delete_all: '删除群聊 {name}？它用于所有站点：所有站点的报警都将不再发到该群。',
    chat_add: '添加群聊', chat_add_do: '添加', chat_kind: '应用', chat_name: '名称（如群名）',
    chat_url: '机器人 Webhook 地址', chat_secret: '加签密钥（机器人开启加签时）',
    now: '刚刚', s_ago: '{n}秒前', m_ago: '{n}分钟前', h_ago: '{n}小时前', d_ago: '{n}天前',
    dur_s: '{n}秒', dur_m: '{n}分钟', dur_h: '{n}小时', dur_hm: '{h}小时{m}分', dur_d: '{n}天', dur_dh: '{d}天{h}小时',
  },
};

// Point names of the shipped profiles and derived values: [English, Chinese].
const POINTS = {
  evap_leaving_temp: ['Supply water', '冷冻水出水'], evap_entering_temp: ['Return water', '冷冻水回水'],
  supply_temp: ['Supply', '供液温度'], return_temp: ['Return', '回液温度'],
  active_setpoint: ['Setpoint', '设定值'], chw_setpoint: ['Chilled-water setpoint', '冷冻水设定值'],
  process_setpoint: ['Setpoint', '设定值'], target_setpoint: ['Target setpoint', '目标设定值'],
  current_limit_setpoint: ['Current limit', '电流限制'], capacity_rla: ['Load', '负载'], capacity: ['Capacity', '能力'],
  cond_entering_temp: ['Condenser water in', '冷却水进水'], cond_leaving_temp: ['Condenser water out', '冷却水出水'],
  status_word: ['Status word', '状态字'], running: ['Running', '运行'], diagnostic_active: ['Diagnostic', '诊断'],
  flow_proven: ['Water flow', '水流'], evap_refrig_pressure: ['Evaporator pressure', '蒸发压力'],
  evap_refrig_temp: ['Evaporator refrig. temp', '蒸发温度'], cond_refrig_pressure: ['Condenser pressure', '冷凝压力'],
  cond_refrig_temp: ['Condenser refrig. temp', '冷凝温度'], compressor_starts: ['Compressor starts', '压缩机启动次数'],
  run_hours: ['Run hours', '运行小时'], diagnostic_code: ['Diagnostic code', '故障代码'],
  chiller_enable: ['Enabled', '机组使能'], chiller_on: ['On', '开机'], run_mode: ['Run mode', '运行模式'],
  outdoor_air_temp: ['Outdoor air', '室外温度'], chiller_current: ['Current', '电流'],
  warning_alarm_index: ['Warning index', '警告代码'], problem_alarm_index: ['Problem index', '问题代码'],
  fault_alarm_index: ['Fault index', '故障代码'], clear_alarms: ['Clear alarms', '清除报警'],
  unit_start: ['Start command', '启动命令'], low_flow_alarm: ['Low flow alarm', '低流量报警'],
  high_supply_temp_alarm: ['High supply alarm', '供液高温报警'], freezestat: ['Freezestat', '防冻开关'],
  chw_delta_t: ['ΔT return − supply', '供回水温差'], supply_deviation: ['Supply − setpoint', '出水偏差'],
  evap_approach: ['Evaporator approach', '蒸发器趋近温度'], cond_approach: ['Condenser approach', '冷凝器趋近温度'],
  starts_per_hour: ['Starts per hour', '每小时启动'], cooling_kw: ['Cooling', '制冷量'],
  kw_per_ton: ['kW per ton', '每冷吨功耗'], cop: ['COP', '能效比'], chw_flow_lps: ['Chilled-water flow', '冷冻水流量'],
  unit_power_kw: ['Power', '功率'],
};
// Daikin run mode words.
const RUN_MODE = { 1: ['Off', '关机'], 2: ['Starting', '启动中'], 3: ['Run', '运行'], 4: ['Pre-shutdown', '准备停机'], 5: ['Service', '维修'] };

const KEY = 'cc.lang';
export let lang = localStorage.getItem(KEY) || (/^zh/i.test(navigator.language) ? 'zh' : 'en');

/** The language: the one chosen on this device, else the signed-in user's. */
export function initLang(userLanguage) {
  const chosen = localStorage.getItem(KEY);
  lang = chosen || (userLanguage === 'zh' || userLanguage === 'en' ? userLanguage : lang);
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
}
export function toggleLang() {
  lang = lang === 'zh' ? 'en' : 'zh';
  localStorage.setItem(KEY, lang);
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
}

/** The string `key` with `{name}` replaced from `vars`. */
export function t(key, vars) {
  let s = dict[lang][key] ?? dict.en[key] ?? key;
  if (vars) for (const k in vars) s = s.replaceAll(`{${k}}`, vars[k]);
  return s;
}
/** Whether there is a string `key`. */
export const has = (key) => key in dict.en;
/** `key_1` when n is 1 and that exists, else `key`. */
export function tn(key, n, vars) {
  return t(n === 1 && dict.en[key + '_1'] ? key + '_1' : key, { n, ...vars });
}
const zh = () => (lang === 'zh' ? 1 : 0);
export function pointLabel(name) {
  const p = POINTS[name];
  return p ? p[zh()] : name.replaceAll('_', ' ');
}
export const knownPoint = (name) => name in POINTS;

const BOOL = new Set(['running', 'diagnostic_active', 'flow_proven', 'chiller_enable', 'chiller_on', 'unit_start',
  'low_flow_alarm', 'high_supply_temp_alarm', 'freezestat', 'clear_alarms']);
export const isBool = (p) => BOOL.has(p.name) && !p.unit;

/** A point's value as text: On/Off for flags, words for run modes, a sensible number of decimals. */
export function fmtValue(p, v) {
  if (v == null) return '—';
  if (isBool(p)) return v ? t('on') : t('off');
  if (p.name === 'run_mode' && RUN_MODE[v]) return RUN_MODE[v][zh()];
  return fmtNum(v, p.unit);
}
export function fmtNum(v, unit) {
  if (v == null || !isFinite(v)) return '—';
  if (unit === '°C' || unit === '°F' || unit === 'K') return v.toFixed(1);
  if (Number.isInteger(v) || Math.abs(v) >= 100) return String(Math.round(v));
  return String(Math.round(v * 100) / 100);
}

const loc = () => (lang === 'zh' ? 'zh-CN' : 'en-GB');
/** How long ago, as "12 s ago". */
export function ago(ts, now = Date.now()) {
  if (!ts) return t('never');
  const s = Math.max(0, Math.round((now - new Date(ts)) / 1000));
  if (s < 5) return t('now');
  if (s < 60) return t('s_ago', { n: s });
  if (s < 3600) return t('m_ago', { n: Math.floor(s / 60) });
  if (s < 172800) return t('h_ago', { n: Math.floor(s / 3600) });
  return t('d_ago', { n: Math.floor(s / 86400) });
}
/** A duration in milliseconds, as "1 h 20 min". */
export function dur(ms) {
  const s = Math.round(Math.abs(ms) / 1000);
  if (s < 60) return t('dur_s', { n: s });
  const m = Math.floor(s / 60);
  if (m < 60) return t('dur_m', { n: m });
  const h = Math.floor(m / 60);
  if (h < 24) return m % 60 ? t('dur_hm', { h, m: m % 60 }) : t('dur_h', { n: h });
  const d = Math.floor(h / 24);
  return h % 24 && d < 3 ? t('dur_dh', { d, h: h % 24 }) : t('dur_d', { n: d });
}
/** A date and time in the phone's time zone; the date left out when it is today. */
export function when(ts) {
  if (!ts) return '—';
  const d = new Date(ts);
  const today = d.toDateString() === new Date().toDateString();
  const o = today ? { hour: '2-digit', minute: '2-digit' } : { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' };
  return d.toLocaleString(loc(), o);
}
/** A chart axis label for a tick `step` milliseconds apart. */
export function tick(ms, step) {
  const d = new Date(ms);
  if (step >= 86400e3) return d.toLocaleDateString(loc(), { month: 'numeric', day: 'numeric' });
  const hm = d.toLocaleTimeString(loc(), { hour: '2-digit', minute: '2-digit', hour12: false });
  return d.getHours() === 0 && d.getMinutes() === 0 && step >= 3600e3
    ? d.toLocaleDateString(loc(), { month: 'numeric', day: 'numeric' })
    : hm;
}
export function stamp(ms) {
  return new Date(ms).toLocaleString(loc(), { month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
}
