"""The AI tool catalog: every tool the web app can run for an AI actor (SPEC §19).

This is the single source of truth on the server: the tools offered to the planner, the
per-agent policy filter, argument validation and the ``tool_calls_total{policy}`` label all
derive from it. Names, modules, default policies, parameter names, types, required flags and
enums mirror the original catalog exactly (the web app executes recorded steps by these
names); descriptions are our own English wording, written for the model.

The data is written with tiny constructor helpers so that one parameter is one line; the
catalog order and the module order (order of first appearance) are significant: function
schemas, ``required`` lists and the offered tool list follow them.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal

from mana_ai.tools.types import ToolParam, ToolSchema

__all__ = ["CATALOG", "CATALOG_BY_NAME", "MODULES", "PROPOSABLE", "PROPOSABLE_NAMES"]


def _s(name: str, description: str, *, req: bool = False, enum: tuple[str, ...] = ()) -> ToolParam:
    return ToolParam(name=name, type="string", required=req, description=description, enum=enum)


def _n(name: str, description: str, *, req: bool = False) -> ToolParam:
    return ToolParam(name=name, type="number", required=req, description=description)


def _b(name: str, description: str, *, req: bool = False) -> ToolParam:
    return ToolParam(name=name, type="boolean", required=req, description=description)


def _a(name: str, description: str, *, req: bool = False) -> ToolParam:
    return ToolParam(name=name, type="array", required=req, description=description)


def _o(name: str, description: str, *, req: bool = False) -> ToolParam:
    return ToolParam(name=name, type="object", required=req, description=description)


def _t(
    name: str,
    module: str,
    policy: Literal["auto", "propose"],
    description: str,
    *params: ToolParam,
) -> ToolSchema:
    return ToolSchema(name=name, module=module, description=description, default_policy=policy, params=params)


def _limit(default: int | None = None) -> ToolParam:
    hint = "" if default is None else f" (default {default})"
    return _n("limit", "Maximum number of entries to return" + hint + ".")


# Enums shared by several tools.
_PRIORITY = ("low", "medium", "high")
_PLACE_CATEGORY = (
    "home", "work", "food", "shopping", "sport", "culture", "nature", "transport", "health",
    "education", "nightlife", "other",
)  # fmt: skip
_DRINK_TYPE = ("water", "coffee", "tea", "juice", "alcohol", "smoothie", "soda", "other")
_JOURNAL_MOOD = (
    "dankbar", "glücklich", "zufrieden", "neutral", "nachdenklich", "traurig", "gestresst", "wütend",
)  # fmt: skip
_EMOTION = (
    "happy", "calm", "energized", "grateful", "excited", "loved", "hopeful", "neutral", "bored",
    "tired", "sad", "anxious", "angry", "stressed", "frustrated", "overwhelmed",
)  # fmt: skip
_ACTIVITY = (
    "work", "exercise", "social", "alone", "commute", "eating", "resting", "creative", "outdoors",
    "screen", "chores", "other",
)  # fmt: skip
_TX_TYPE = ("income", "expense")
_EVENT_CATEGORY = (
    "music", "theater", "art", "tech", "sport", "food", "family", "nature", "education", "community",
    "nightlife", "market", "other",
)  # fmt: skip
_QUESTION_TYPE = ("single", "multi", "truefalse", "text")
_LIBRARY_KIND = ("book", "movie", "series", "comic")
_LIBRARY_STATUS = ("planned", "active", "completed", "paused", "dropped")
_WRITING_KIND = (
    "blog", "essay", "email", "social", "story", "letter", "speech", "cover-letter",
    "product-description", "press-release", "bio", "other",
)  # fmt: skip
_DRAFT_STATUS = ("draft", "refining", "complete", "published")
_COMIC_STYLE = ("comic", "manga", "cartoon", "graphic-novel", "webtoon")
_QUALITY = ("low", "medium", "high")
_IMAGE_MODEL = (
    "openai/gpt-image-2",
    "google/gemini-3-pro-image-preview",
    "google/gemini-3.1-flash-image-preview",
)
_SIGN_KIND = ("omen", "fortune", "hunch")
_SOURCE_CATEGORY = (
    "gut", "tarot", "horoscope", "fortune-cookie", "iching", "dream", "person", "media", "natural", "other",
)  # fmt: skip
_VIBE = ("good", "bad", "mysterious")
_LAST_CATEGORY = (
    "culinary", "adventure", "travel", "people", "career", "creative", "nature", "culture", "health",
    "tech", "other",
)  # fmt: skip

_ARTICLE_ID = "Article id (from list_articles)."
_GOAL_ID = "Goal id (from list_goals)."
_NOTE_ID = "Note id (from list_notes)."
_QUIZ_ID = "Quiz id (from list_quizzes)."
_QUESTION_ID = "Question id (from get_quiz_questions)."
_DRAFT_ID = "Draft id (from list_drafts)."
_CHARACTER_ID = "Comic character id (from list_comic_characters)."
_ENTRY_ID = "Library entry id (from list_library_entries)."
_LAST_ID = "Last id (from list_lasts)."
_TAGS = "Comma-separated tags."
_DATE = "Date as YYYY-MM-DD."

CATALOG: tuple[ToolSchema, ...] = (
    # ── todo ──
    _t("create_task", "todo", "propose", "Create a new task, optionally with a due date and a priority.",
       _s("title", "Task title.", req=True),
       _s("dueDate", "Due date as YYYY-MM-DD."),
       _s("priority", "Task priority.", enum=_PRIORITY),
       _s("description", "Longer description or notes for the task.")),
    _t("complete_task", "todo", "propose", "Mark one task as done by its id.",
       _s("taskId", "Task id (from list_tasks).", req=True)),
    _t("complete_tasks_by_title", "todo", "propose",
       "Mark every open task whose title contains the given text (case-insensitive) as done. "
       "Use it when you know the task's name but not its id.",
       _s("titleMatch", "Title or part of the title to match.", req=True)),
    _t("get_task_stats", "todo", "auto", "Return task counts: total, completed, overdue and due today."),
    _t("list_tasks", "todo", "auto", "List tasks with title, due date and priority.",
       _s("filter", "Which tasks to list (default open).",
          enum=("open", "completed", "overdue", "today", "all")),
       _limit(20)),
    # ── calendar ──
    _t("create_event", "calendar", "propose", "Create a calendar event.",
       _s("title", "Event title.", req=True),
       _s("startTime", "Start as an ISO 8601 date-time.", req=True),
       _s("endTime", "End as an ISO 8601 date-time.", req=True),
       _b("isAllDay", "True for an all-day event."),
       _s("location", "Where the event takes place."),
       _s("description", "Event description.")),
    _t("get_todays_events", "calendar", "auto", "Return all calendar events of today."),
    # ── notes ──
    _t("create_note", "notes", "propose", "Create a new note; returns the id of the new note.",
       _s("title", "Note title."),
       _s("content", "Note body in Markdown.", req=True)),
    _t("update_note", "notes", "propose",
       "Overwrite the title and/or content of an existing note. Destructive: prefer append_to_note or "
       "add_tag_to_note when you only want to add something.",
       _s("noteId", _NOTE_ID, req=True),
       _s("title", "New title."),
       _s("content", "New content; replaces the whole body.")),
    _t("append_to_note", "notes", "propose",
       "Append text on a new line at the end of an existing note. Non-destructive.",
       _s("noteId", _NOTE_ID, req=True),
       _s("content", "Text to append.", req=True)),
    _t("add_tag_to_note", "notes", "propose",
       "Add a hashtag to an existing note. Idempotent: nothing happens if the tag is already there.",
       _s("noteId", _NOTE_ID, req=True),
       _s("tag", "Tag name without '#', e.g. 'nature'; spaces become underscores.", req=True)),
    _t("list_notes", "notes", "auto", "List notes (id, title, excerpt) so you can reference them.",
       _limit(30),
       _s("query", "Case-insensitive text filter on title or content."),
       _b("includeArchived", "Also include archived notes (default false).")),
    # ── places ──
    _t("create_place", "places", "propose", "Save a new place with its coordinates.",
       _s("name", "Name of the place.", req=True),
       _n("latitude", "Latitude in decimal degrees.", req=True),
       _n("longitude", "Longitude in decimal degrees.", req=True),
       _s("category", "Kind of place.", enum=_PLACE_CATEGORY),
       _s("address", "Postal address.")),
    _t("visit_place", "places", "propose", "Record a visit to a saved place.",
       _s("placeId", "Place id (from get_places).", req=True)),
    _t("get_places", "places", "auto", "Return all saved places."),
    _t("get_current_location", "places", "auto",
       "Return the device's current GPS position (needs location permission)."),
    # ── drink ──
    _t("undo_drink", "drink", "propose", "Undo the most recent drink entry. Use at most once per plan."),
    _t("get_drink_progress", "drink", "auto", "Return today's drinking progress (water, coffee, total)."),
    _t("log_drink", "drink", "auto", "Log a drink.",
       _s("drinkType", "Kind of drink.", req=True, enum=_DRINK_TYPE),
       _n("quantityMl", "Amount in millilitres.", req=True),
       _s("name", "Specific name, e.g. 'Latte macchiato'.")),
    # ── food ──
    _t("nutrition_summary", "food", "auto", "Return today's nutrition summary (meals, calories, protein)."),
    _t("log_meal", "food", "auto", "Log a meal.",
       _s("mealType", "Which meal.", req=True, enum=("breakfast", "lunch", "dinner", "snack")),
       _s("description", "What was eaten.", req=True),
       _n("calories", "Energy in kcal."),
       _n("protein", "Protein in grams.")),
    # ── news ──
    _t("save_news_article", "news", "propose", "Save a news article by URL to the user's reading list.",
       _s("url", "Article URL.", req=True),
       _s("title", "Article title."),
       _s("summary", "Short summary of why it matters.")),
    # ── articles ──
    _t("list_articles", "articles", "auto",
       "List saved read-it-later articles (id, title, site, status, reading time).",
       _s("status", "Only articles with this status; archived ones only with 'archived' or 'all'.",
          enum=("unread", "reading", "finished", "archived", "all")),
       _limit(30),
       _s("query", "Case-insensitive text filter on title, author or source.")),
    _t("save_article", "articles", "propose",
       "Save an article from a URL to the reading list; the text is extracted server-side.",
       _s("url", "Article URL.", req=True),
       _s("title", "Display title shown to the user for review."),
       _s("reason", "Short reason why the article is relevant to the user.")),
    _t("import_articles_from_urls", "articles", "auto",
       "Start one background job that imports several article URLs; returns the job id.",
       _a("urls", "Article URLs as an array of strings (at most 50).", req=True)),
    _t("archive_article", "articles", "propose", "Move an article to the archive.",
       _s("articleId", _ARTICLE_ID, req=True)),
    _t("tag_article", "articles", "propose", "Tag an article; the tag is created if it does not exist.",
       _s("articleId", _ARTICLE_ID, req=True),
       _s("tagName", "Tag name, e.g. 'AI'.", req=True)),
    _t("add_article_highlight", "articles", "propose",
       "Highlight a passage of an article. The text must occur verbatim in the article.",
       _s("articleId", _ARTICLE_ID, req=True),
       _s("text", "Exact passage to highlight (10-500 characters).", req=True),
       _s("color", "Highlight colour.", enum=("yellow", "green", "blue", "pink")),
       _s("note", "Note attached to the highlight.")),
    # ── news-research ──
    _t("research_news", "news-research", "propose",
       "Search RSS feeds and web sources for articles on a topic; a useful step before save_news_article.",
       _s("query", "Topic or search terms.", req=True),
       _s("language", "Language code such as 'de' or 'en'."),
       _n("limit", "Maximum number of results (default 10).")),
    # ── journal ──
    _t("create_journal_entry", "journal", "propose", "Write a new journal entry, optionally with a mood.",
       _s("content", "Entry text.", req=True),
       _s("title", "Entry title."),
       _s("mood", "Mood of the entry (German labels).", enum=_JOURNAL_MOOD)),
    # ── habits ──
    _t("create_habit", "habits", "propose", "Create a new habit tracker; returns its id.",
       _s("title", "Habit name.", req=True),
       _s("icon", "A single emoji as icon.", req=True),
       _s("color", "Hex colour, e.g. #EF4444.", req=True)),
    _t("log_habit", "habits", "propose", "Log today's completion of an existing habit.",
       _s("habitId", "Habit id (from get_habits).", req=True),
       _s("note", "Note for this log entry.")),
    _t("get_habits", "habits", "auto", "Return all active habits."),
    # ── myday ──
    _t("get_myday_summary", "myday", "auto",
       "Return a full summary of the user's day: tasks, events, drinks, food, places, streaks and active "
       "goals. Call it first to get the day's context."),
    # ── goals ──
    _t("list_goals", "goals", "auto", "List goals with progress, target value, period and status.",
       _s("filter", "Which goals to list.", enum=("active", "paused", "completed", "all"))),
    _t("get_goal_progress", "goals", "auto", "Return detailed progress of one goal.",
       _s("goalId", _GOAL_ID, req=True)),
    _t("create_goal", "goals", "propose",
       "Create a goal, either from a template (templateId) or as a custom goal from the other fields.",
       _s("templateId", "Template id such as 'tpl-water-daily'; when set, the other fields are ignored."),
       _s("title", "Title of a custom goal."),
       _s("description", "Goal description."),
       _n("targetValue", "Target count per period, e.g. 8 for eight glasses of water."),
       _s("period", "Period the target applies to.", enum=("day", "week", "month")),
       _s("comparison", "gte = at least the target, lte = at most the target.", enum=("gte", "lte")),
       _s("eventType", "Domain event to count, e.g. 'DrinkLogged' or 'TaskCompleted'."),
       _s("moduleId", "Module the goal belongs to, e.g. 'drink' or 'todo'.")),
    _t("pause_goal", "goals", "propose", "Pause an active goal; it can be resumed later.",
       _s("goalId", _GOAL_ID, req=True)),
    _t("resume_goal", "goals", "propose", "Resume a paused goal.",
       _s("goalId", _GOAL_ID, req=True)),
    _t("complete_goal", "goals", "propose", "Mark a goal as completed.",
       _s("goalId", _GOAL_ID, req=True)),
    # ── contacts ──
    _t("create_contact", "contacts", "propose", "Create a contact; leave out fields you do not know.",
       _s("firstName", "First name.", req=True),
       _s("lastName", "Last name."),
       _s("email", "E-mail address."),
       _s("phone", "Phone number."),
       _s("company", "Company or organisation."),
       _s("notes", "Free-text notes about the contact.")),
    _t("get_contacts", "contacts", "auto", "Return all contacts."),
    # ── mood ──
    _t("log_mood", "mood", "propose", "Record a mood check-in with level, main emotion and context.",
       _n("level", "Mood level from 1 (very bad) to 10 (great).", req=True),
       _s("emotion", "Main emotion.", req=True, enum=_EMOTION),
       _s("activity", "What the user is doing right now.", enum=_ACTIVITY),
       _s("notes", "Note for the check-in.")),
    _t("get_mood_today", "mood", "auto", "Return today's mood entries with average level and emotions."),
    _t("get_mood_insights", "mood", "auto",
       "Return mood trends: averages, most frequent emotion, positive/negative ratio and activities that "
       "correlate with good or bad mood.",
       _n("days", "Analysis window in days (default 7).")),
    # ── finance ──
    _t("add_transaction", "finance", "propose", "Record an income or an expense.",
       _s("type", "Income or expense.", req=True, enum=_TX_TYPE),
       _n("amount", "Amount in the main currency unit.", req=True),
       _s("description", "What the money was for.", req=True),
       _s("date", "Date as YYYY-MM-DD (default today).")),
    _t("get_month_summary", "finance", "auto",
       "Return a month's finances: income, expenses, balance and spending per category.",
       _s("month", "Month as YYYY-MM (default the current month).")),
    _t("list_transactions", "finance", "auto", "List recent transactions.",
       _s("type", "Only income or only expenses.", enum=_TX_TYPE),
       _s("month", "Month as YYYY-MM."),
       _limit(20)),
    # ── times ──
    _t("start_timer", "times", "propose", "Start a time-tracking timer.",
       _s("description", "What is being worked on."),
       _s("projectId", "Project id (from list_projects).")),
    _t("stop_timer", "times", "propose", "Stop the running timer and save the time entry."),
    _t("get_timer_status", "times", "auto", "Return whether a timer is running, its duration and description."),
    _t("get_time_stats", "times", "auto", "Return tracked hours, broken down by project.",
       _s("period", "Period to report (default week).", enum=("today", "week", "month"))),
    _t("list_projects", "times", "auto", "List active time-tracking projects with their clients."),
    # ── wetter ──
    _t("get_weather", "wetter", "auto", "Return current weather and a 7-day forecast for a location.",
       _s("location", "Place name (e.g. 'Berlin') or 'lat,lon' coordinates.", req=True)),
    _t("get_rain_forecast", "wetter", "auto",
       "Return a minute-by-minute rain nowcast and active weather warnings for a location.",
       _s("location", "Place name or 'lat,lon' coordinates.", req=True)),
    # ── events ──
    _t("discover_events", "events", "auto",
       "Search public events in the user's regions; returns title, date, venue, category and source.",
       _s("query", "Search text, e.g. 'jazz concerts'."),
       _s("category", "Event category.", enum=_EVENT_CATEGORY),
       _n("days_ahead", "How many days ahead to search (default 14).")),
    _t("suggest_event", "events", "propose",
       "Suggest a discovered event to the user for adding to their calendar.",
       _s("discovered_event_id", "Id of the discovered event (from discover_events).", req=True),
       _s("reason", "Why this event is relevant to the user.")),
    # ── quiz ──
    _t("create_quiz", "quiz", "propose", "Create a new, empty quiz.",
       _s("title", "Quiz title.", req=True),
       _s("description", "Quiz description."),
       _s("category", "Category, e.g. 'Geography'.")),
    _t("update_quiz", "quiz", "propose",
       "Update a quiz's metadata; only the given fields change, an empty string clears "
       "description or category.",
       _s("quizId", _QUIZ_ID, req=True),
       _s("title", "New title."),
       _s("description", "New description."),
       _s("category", "New category."),
       _b("isPinned", "Pin the quiz to the top."),
       _b("isArchived", "Archive the quiz (hide it from the list).")),
    _t("add_quiz_question", "quiz", "propose",
       "Add a question to a quiz. optionsJson depends on type: single/multi = JSON array "
       '[{"text": "...", "correct": true|false}] with at least two options and one correct; '
       "truefalse = 'true' or 'false'; text = the expected answer (compared case-insensitively).",
       _s("quizId", _QUIZ_ID, req=True),
       _s("type", "Question type.", req=True, enum=_QUESTION_TYPE),
       _s("questionText", "The question.", req=True),
       _s("optionsJson", "Answer data in the format required by type (see the tool description).",
          req=True),
       _s("explanation", "Explanation shown after answering.")),
    _t("update_quiz_question", "quiz", "propose",
       "Update a question. To change the answers pass type and optionsJson together (same format as "
       "add_quiz_question).",
       _s("questionId", _QUESTION_ID, req=True),
       _s("questionText", "New question text."),
       _s("type", "New question type (together with optionsJson).", enum=_QUESTION_TYPE),
       _s("optionsJson", "New answer data in the format required by type."),
       _s("explanation", "New explanation; an empty string clears it.")),
    _t("delete_quiz_question", "quiz", "propose", "Delete a question from a quiz.",
       _s("questionId", _QUESTION_ID, req=True)),
    _t("list_quizzes", "quiz", "auto", "List quizzes (id, title, category, question count).",
       _limit(30),
       _s("query", "Case-insensitive text filter on title or category.")),
    _t("get_quiz_questions", "quiz", "auto",
       "Return all questions of a quiz; read them before adding questions to avoid duplicates.",
       _s("quizId", _QUIZ_ID, req=True)),
    _t("get_quiz_stats", "quiz", "auto",
       "Return a quiz's attempt statistics: attempts, average and best score, last attempt.",
       _s("quizId", _QUIZ_ID, req=True)),
    # ── invoices ──
    _t("create_invoice", "invoices", "propose",
       "Create a draft invoice with client and line items; the invoice number is assigned automatically.",
       _s("clientName", "Client name.", req=True),
       _s("clientEmail", "Client e-mail address."),
       _s("clientAddress", "Client postal address (street and number, then postcode and city)."),
       _s("subject", "Short subject, e.g. 'Consulting April'."),
       _s("currency", "Currency (default CHF).", enum=("CHF", "EUR", "USD")),
       _s("dueDate", "Due date as YYYY-MM-DD (default 30 days from today)."),
       _a("lines", "Line items, at least one: [{title, quantity, unitPrice, vatRate?, unit?}] with "
          "unitPrice in the main currency unit.", req=True)),
    _t("mark_invoice_paid", "invoices", "propose", "Mark a sent or overdue invoice as paid.",
       _s("invoiceId", "Invoice id (from list_invoices).", req=True),
       _s("paidAt", "Payment date as ISO date or YYYY-MM-DD (default now).")),
    _t("list_invoices", "invoices", "auto", "List invoices with number, client, status, amount and due date.",
       _s("status", "Only invoices with this status.", enum=("draft", "sent", "paid", "overdue", "void")),
       _limit(20)),
    _t("get_invoice_stats", "invoices", "auto",
       "Return invoice figures per currency: open and overdue totals, invoiced and paid this year."),
    # ── library ──
    _t("create_library_entry", "library", "propose",
       "Add a book, movie, series or comic to the library (status defaults to planned).",
       _s("kind", "Kind of entry.", req=True, enum=_LIBRARY_KIND),
       _s("title", "Title.", req=True),
       _s("creators", "Authors, directors or creators, comma-separated."),
       _n("year", "Year of release."),
       _s("status", "Initial status.", enum=_LIBRARY_STATUS),
       _n("rating", "Rating from 1 to 5 (sensible for completed entries)."),
       _s("tags", _TAGS),
       _s("genres", "Comma-separated genres.")),
    _t("update_library_entry_status", "library", "propose", "Change the status of a library entry.",
       _s("entryId", _ENTRY_ID, req=True),
       _s("status", "New status.", req=True, enum=_LIBRARY_STATUS)),
    _t("rate_library_entry", "library", "propose", "Set the rating of a library entry.",
       _s("entryId", _ENTRY_ID, req=True),
       _n("rating", "Rating from 1 to 5.", req=True)),
    _t("list_library_entries", "library", "auto", "List library entries (id, kind, title, status, rating).",
       _s("kind", "Only this kind.", enum=_LIBRARY_KIND),
       _s("status", "Only this status.", enum=_LIBRARY_STATUS),
       _limit(30)),
    # ── broadcast ──
    _t("create_campaign_draft", "broadcast", "propose",
       "Create a newsletter campaign draft; the user picks the recipients in the app. Returns its id.",
       _s("name", "Internal working title of the campaign.", req=True),
       _s("subject", "E-mail subject line.", req=True),
       _s("preheader", "Preview text shown next to the subject."),
       _s("htmlContent", "Body as HTML using only p, h1-h3, ul, ol, li, a, strong, em and br.",
          req=True)),
    _t("list_campaigns", "broadcast", "auto", "List campaigns (id, name, subject, status, recipients, sent at).",
       _s("status", "Only campaigns with this status.",
          enum=("draft", "scheduled", "sending", "sent", "cancelled")),
       _limit(20)),
    _t("get_campaign_stats", "broadcast", "auto",
       "Return a campaign's open, click, bounce and unsubscribe rates (each 0..1).",
       _s("campaignId", "Campaign id (from list_campaigns).", req=True)),
    # ── website ──
    _t("create_website", "website", "propose", "Create a website with a home page; returns site and page ids.",
       _s("name", "Display name of the website.", req=True),
       _s("slug", "2-40 lowercase letters, digits or hyphens; becomes part of the URL.", req=True)),
    _t("apply_website_template", "website", "propose",
       "Create a new website from a template, copying all its pages and blocks.",
       _s("templateId", "Template to use.", req=True, enum=("portfolio", "personal-linktree", "event", "blank")),
       _s("name", "Website name.", req=True),
       _s("slug", "URL slug.", req=True)),
    _t("create_website_page", "website", "propose", "Add a page to an existing website.",
       _s("siteId", "Website id (from list_websites).", req=True),
       _s("path", "URL path with a leading slash, e.g. /about.", req=True),
       _s("title", "Page title.", req=True)),
    _t("add_website_block", "website", "propose", "Add a content block to a website page.",
       _s("pageId", "Page id (from list_website_pages).", req=True),
       _s("type", "Block type.", req=True,
          enum=("hero", "richText", "cta", "image", "gallery", "faq", "form", "moduleEmbed", "columns",
                "spacer")),
       _o("props", "Type-specific block properties; omit to use the defaults."),
       _s("parentBlockId", "Id of the container block (e.g. columns) when nesting."),
       _s("slotKey", "Slot inside the container, e.g. col-0.")),
    _t("update_website_block", "website", "propose",
       "Update a block's properties; only the fields in patch change.",
       _s("blockId", "Block id (from list_website_blocks).", req=True),
       _o("patch", "The block properties to change.", req=True)),
    _t("publish_website", "website", "propose",
       "Publish the current draft of a website. The user should have reviewed the content first.",
       _s("siteId", "Website id (from list_websites).", req=True)),
    _t("list_websites", "website", "auto", "List websites (id, slug, name, published state)."),
    _t("list_website_pages", "website", "auto", "List the pages of a website (id, path, title, order).",
       _s("siteId", "Website id (from list_websites).", req=True)),
    _t("list_website_blocks", "website", "auto", "List the blocks of a page (id, type, parent, order, props).",
       _s("pageId", "Page id (from list_website_pages).", req=True)),
    # ── writing ──
    _t("list_drafts", "writing", "auto", "List writing drafts (id, kind, title, status, word count).",
       _s("kind", "Only this kind of text.", enum=_WRITING_KIND),
       _s("status", "Only this status.", enum=_DRAFT_STATUS),
       _limit(30)),
    _t("get_draft", "writing", "auto", "Return a full draft with briefing, current version, style and sources.",
       _s("draftId", _DRAFT_ID, req=True)),
    _t("list_writing_styles", "writing", "auto", "List available writing styles (presets and the user's own)."),
    _t("create_draft", "writing", "propose",
       "Create a writing draft with its briefing, without generating text yet; then call "
       "generate_draft_content.",
       _s("kind", "Kind of text.", req=True, enum=_WRITING_KIND),
       _s("title", "Working title.", req=True),
       _s("topic", "Core briefing: what the text is about.", req=True),
       _s("audience", "Target audience."),
       _s("tone", "Tone, e.g. 'neutral' or 'warm'."),
       _s("language", "ISO language code (default 'de')."),
       _n("targetWords", "Target length in words."),
       _s("styleId", "Style id (from list_writing_styles)."),
       _s("extraInstructions", "Additional instructions for generation.")),
    _t("generate_draft_content", "writing", "propose",
       "Generate a new version of a draft's text from its briefing, style and sources.",
       _s("draftId", _DRAFT_ID, req=True)),
    _t("refine_draft_selection", "writing", "propose",
       "Refine a selected range of the draft's current version in place.",
       _s("draftId", _DRAFT_ID, req=True),
       _s("operation", "Kind of refinement.", req=True,
          enum=("shorten", "expand", "tone", "rewrite", "translate")),
       _n("selectionStart", "Start offset of the selection in characters (0-based).", req=True),
       _n("selectionEnd", "End offset of the selection in characters (exclusive).", req=True),
       _s("targetTone", "Target tone; only for operation=tone."),
       _s("instruction", "Rewrite instruction; only for operation=rewrite."),
       _s("targetLanguage", "ISO code of the target language; only for operation=translate.")),
    _t("set_draft_status", "writing", "propose", "Set the status of a draft.",
       _s("draftId", _DRAFT_ID, req=True),
       _s("status", "New status.", req=True, enum=_DRAFT_STATUS)),
    _t("save_draft_as_article", "writing", "propose",
       "Publish the draft's current version as an article in the reading list.",
       _s("draftId", _DRAFT_ID, req=True)),
    # ── comic ──
    _t("list_comic_stories", "comic", "auto", "List comic stories (id, title, style, panel count, favourite).",
       _s("style", "Only this style.", enum=_COMIC_STYLE),
       _b("favoriteOnly", "Only favourites."),
       _limit(30)),
    _t("create_comic_story", "comic", "propose",
       "Create a comic story; the style is fixed for all later panels.",
       _s("title", "Story title.", req=True),
       _s("style", "Visual style.", req=True, enum=_COMIC_STYLE),
       _s("description", "Short story description."),
       _s("storyContext", "Free-text briefing: tone, goal, background."),
       _s("tags", _TAGS)),
    _t("generate_comic_panel", "comic", "propose",
       "Render a new panel of an existing story; costs credits (more for higher quality).",
       _s("storyId", "Story id (from list_comic_stories).", req=True),
       _s("panelPrompt", "What happens in the panel: scene, action, mood. Short English sentences work best.",
          req=True),
       _s("caption", "Narration line rendered into the image."),
       _s("dialogue", "Speech-bubble text rendered into the image."),
       _s("quality", "Render quality; higher costs more credits.", enum=_QUALITY),
       _s("model", "Image model (default openai/gpt-image-2).", enum=_IMAGE_MODEL)),
    _t("list_comic_characters", "comic", "auto",
       "List comic characters (id, name, style, variant count, pinned variant, favourite).",
       _s("style", "Only this style.", enum=_COMIC_STYLE),
       _b("favoriteOnly", "Only favourites."),
       _limit(30)),
    _t("create_comic_character", "comic", "propose",
       "Create a comic character without rendering it; then call generate_character_variant.",
       _s("name", "Character name.", req=True),
       _s("style", "Visual style.", req=True, enum=_COMIC_STYLE),
       _s("addPrompt", "Extra prompt, e.g. 'friendly expression'."),
       _s("description", "Short character description."),
       _s("tags", _TAGS)),
    _t("generate_character_variant", "comic", "propose",
       "Render portrait variants of a comic character; costs credits per variant.",
       _s("characterId", _CHARACTER_ID, req=True),
       _n("count", "Number of variants, 1-4 (default 4)."),
       _s("quality", "Render quality; higher costs more credits.", enum=_QUALITY),
       _s("model", "Image model (default openai/gpt-image-2).", enum=_IMAGE_MODEL)),
    _t("pin_character_variant", "comic", "propose",
       "Make another variant the canonical look of a character for stories created afterwards.",
       _s("characterId", _CHARACTER_ID, req=True),
       _s("variantMediaId", "Id of one of the character's variants.", req=True)),
    # ── augur ──
    _t("capture_sign", "augur", "propose", "Record a sign (omen, fortune or hunch); returns its id.",
       _s("kind", "Kind of sign.", req=True, enum=_SIGN_KIND),
       _s("source", "Where it came from, e.g. 'black cat' or 'fortune cookie'.", req=True),
       _s("claim", "What the sign says.", req=True),
       _s("sourceCategory", "Category of the source.", enum=_SOURCE_CATEGORY),
       _s("vibe", "Overall feeling of the sign (default mysterious).", enum=_VIBE),
       _s("feltMeaning", "The user's own interpretation."),
       _s("expectedOutcome", "Concrete prediction."),
       _s("expectedBy", "Date by which it should come true, YYYY-MM-DD."),
       _n("probability", "Estimated probability from 0 to 1."),
       _s("tags", _TAGS)),
    _t("resolve_sign", "augur", "propose", "Resolve an open sign: did it come true?",
       _s("entryId", "Sign id (from list_open_signs).", req=True),
       _s("outcome", "Outcome of the sign.", req=True, enum=("fulfilled", "partly", "not-fulfilled")),
       _s("note", "How it turned out.")),
    _t("list_open_signs", "augur", "auto", "List unresolved signs (id, kind, source, claim, dates).",
       _s("kind", "Only this kind.", enum=_SIGN_KIND),
       _limit(30)),
    _t("consult_oracle", "augur", "auto",
       "Ask what happened with similar signs in the past (count, hit rate, breakdown); stays silent "
       "while there is too little resolved history.",
       _s("kind", "Kind of the hypothetical sign.", req=True, enum=_SIGN_KIND),
       _s("sourceCategory", "Category of the source.", req=True, enum=_SOURCE_CATEGORY),
       _s("vibe", "Overall feeling.", req=True, enum=_VIBE),
       _s("source", "Source keyword for matching."),
       _s("claim", "Claim text for matching."),
       _s("tags", _TAGS)),
    _t("augur_year_recap", "augur", "auto",
       "Return a year recap of signs: totals, resolved, hit rate, vibes and top source categories.",
       _n("year", "Year as YYYY (default the current year).")),
    # ── lasts ──
    _t("create_last", "lasts", "propose",
       "Record a 'last time' of something. Status defaults to suspected; use confirmed only when the user "
       "is sure.",
       _s("title", "What happened for the last time, e.g. 'Last day at the old job'.", req=True),
       _s("category", "Category.", enum=_LAST_CATEGORY),
       _s("status", "Lifecycle status.", enum=("suspected", "confirmed")),
       _s("date", "Date of the last time, YYYY-MM-DD, if known."),
       _s("confidence", "How sure it was the last time.", enum=("probably", "likely", "certain")),
       _s("meaning", "What it meant to the user."),
       _s("note", "Free note.")),
    _t("confirm_last", "lasts", "propose",
       "Move a last from suspected to confirmed and add reflections; the date defaults to today.",
       _s("lastId", _LAST_ID, req=True),
       _s("date", _DATE),
       _s("meaning", "What it meant."),
       _s("whatIKnewThen", "What the user did not know back then."),
       _s("whatIKnowNow", "What the user sees today."),
       _n("tenderness", "How much it still moves the user, 1-5."),
       _s("wouldReclaim", "Would the user bring it back?", enum=("no", "maybe", "yes"))),
    _t("reclaim_last", "lasts", "propose", "Mark a last as reclaimed: it happened again.",
       _s("lastId", _LAST_ID, req=True),
       _s("reclaimedNote", "What came back.")),
    _t("list_lasts", "lasts", "auto", "List lasts (id, title, status, category, date).",
       _s("status", "Only this status.", enum=("suspected", "confirmed", "reclaimed")),
       _s("category", "Only this category.", enum=_LAST_CATEGORY),
       _limit(30)),
    _t("suggest_lasts", "lasts", "auto",
       "Scan places, habits and contacts for frequency drops and add suspected lasts to the inbox."),
)  # fmt: skip

CATALOG_BY_NAME: Mapping[str, ToolSchema] = MappingProxyType({t.name: t for t in CATALOG})
"""Catalog entries by tool name."""

MODULES: tuple[str, ...] = tuple(dict.fromkeys(t.module for t in CATALOG))
"""Module names in order of first appearance in the catalog."""

PROPOSABLE: tuple[ToolSchema, ...] = tuple(t for t in CATALOG if t.default_policy == "propose")
"""The tools the server offers the planner (SPEC §5 step 8: ``SERVER_TOOLS``)."""

PROPOSABLE_NAMES: frozenset[str] = frozenset(t.name for t in PROPOSABLE)
