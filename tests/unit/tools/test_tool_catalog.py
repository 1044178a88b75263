"""The tool catalog against SPEC §19 (counts, order, exact signatures) and §24.2 ``schemas.test.ts``."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from mana_ai.tools.catalog import CATALOG, CATALOG_BY_NAME, MODULES, PROPOSABLE, PROPOSABLE_NAMES
from mana_ai.tools.types import ToolSchema

# SPEC §19, one line per tool in catalog order: "<module> <name> [<policy>] (<params>)" with
# params as "name:type!" (required) / "name:type?" (optional) and "[a|b]" enums.
GOLDEN = """
todo create_task [propose] (title:string!, dueDate:string?, priority:string?[low|medium|high], description:string?)
todo complete_task [propose] (taskId:string!)
todo complete_tasks_by_title [propose] (titleMatch:string!)
todo get_task_stats [auto] (no params)
todo list_tasks [auto] (filter:string?[open|completed|overdue|today|all], limit:number?)
calendar create_event [propose] (title:string!, startTime:string!, endTime:string!, isAllDay:boolean?, location:string?, description:string?)
calendar get_todays_events [auto] (no params)
notes create_note [propose] (title:string?, content:string!)
notes update_note [propose] (noteId:string!, title:string?, content:string?)
notes append_to_note [propose] (noteId:string!, content:string!)
notes add_tag_to_note [propose] (noteId:string!, tag:string!)
notes list_notes [auto] (limit:number?, query:string?, includeArchived:boolean?)
places create_place [propose] (name:string!, latitude:number!, longitude:number!, category:string?[home|work|food|shopping|sport|culture|nature|transport|health|education|nightlife|other], address:string?)
places visit_place [propose] (placeId:string!)
places get_places [auto] (no params)
places get_current_location [auto] (no params)
drink undo_drink [propose] (no params)
drink get_drink_progress [auto] (no params)
drink log_drink [auto] (drinkType:string![water|coffee|tea|juice|alcohol|smoothie|soda|other], quantityMl:number!, name:string?)
food nutrition_summary [auto] (no params)
food log_meal [auto] (mealType:string![breakfast|lunch|dinner|snack], description:string!, calories:number?, protein:number?)
news save_news_article [propose] (url:string!, title:string?, summary:string?)
articles list_articles [auto] (status:string?[unread|reading|finished|archived|all], limit:number?, query:string?)
articles save_article [propose] (url:string!, title:string?, reason:string?)
articles import_articles_from_urls [auto] (urls:array!)
articles archive_article [propose] (articleId:string!)
articles tag_article [propose] (articleId:string!, tagName:string!)
articles add_article_highlight [propose] (articleId:string!, text:string!, color:string?[yellow|green|blue|pink], note:string?)
news-research research_news [propose] (query:string!, language:string?, limit:number?)
journal create_journal_entry [propose] (content:string!, title:string?, mood:string?[dankbar|glücklich|zufrieden|neutral|nachdenklich|traurig|gestresst|wütend])
habits create_habit [propose] (title:string!, icon:string!, color:string!)
habits log_habit [propose] (habitId:string!, note:string?)
habits get_habits [auto] (no params)
myday get_myday_summary [auto] (no params)
goals list_goals [auto] (filter:string?[active|paused|completed|all])
goals get_goal_progress [auto] (goalId:string!)
goals create_goal [propose] (templateId:string?, title:string?, description:string?, targetValue:number?, period:string?[day|week|month], comparison:string?[gte|lte], eventType:string?, moduleId:string?)
goals pause_goal [propose] (goalId:string!)
goals resume_goal [propose] (goalId:string!)
goals complete_goal [propose] (goalId:string!)
contacts create_contact [propose] (firstName:string!, lastName:string?, email:string?, phone:string?, company:string?, notes:string?)
contacts get_contacts [auto] (no params)
mood log_mood [propose] (level:number!, emotion:string![happy|calm|energized|grateful|excited|loved|hopeful|neutral|bored|tired|sad|anxious|angry|stressed|frustrated|overwhelmed], activity:string?[work|exercise|social|alone|commute|eating|resting|creative|outdoors|screen|chores|other], notes:string?)
mood get_mood_today [auto] (no params)
mood get_mood_insights [auto] (days:number?)
finance add_transaction [propose] (type:string![income|expense], amount:number!, description:string!, date:string?)
finance get_month_summary [auto] (month:string?)
finance list_transactions [auto] (type:string?[income|expense], month:string?, limit:number?)
times start_timer [propose] (description:string?, projectId:string?)
times stop_timer [propose] (no params)
times get_timer_status [auto] (no params)
times get_time_stats [auto] (period:string?[today|week|month])
times list_projects [auto] (no params)
wetter get_weather [auto] (location:string!)
wetter get_rain_forecast [auto] (location:string!)
events discover_events [auto] (query:string?, category:string?[music|theater|art|tech|sport|food|family|nature|education|community|nightlife|market|other], days_ahead:number?)
events suggest_event [propose] (discovered_event_id:string!, reason:string?)
quiz create_quiz [propose] (title:string!, description:string?, category:string?)
quiz update_quiz [propose] (quizId:string!, title:string?, description:string?, category:string?, isPinned:boolean?, isArchived:boolean?)
quiz add_quiz_question [propose] (quizId:string!, type:string![single|multi|truefalse|text], questionText:string!, optionsJson:string!, explanation:string?)
quiz update_quiz_question [propose] (questionId:string!, questionText:string?, type:string?[single|multi|truefalse|text], optionsJson:string?, explanation:string?)
quiz delete_quiz_question [propose] (questionId:string!)
quiz list_quizzes [auto] (limit:number?, query:string?)
quiz get_quiz_questions [auto] (quizId:string!)
quiz get_quiz_stats [auto] (quizId:string!)
invoices create_invoice [propose] (clientName:string!, clientEmail:string?, clientAddress:string?, subject:string?, currency:string?[CHF|EUR|USD], dueDate:string?, lines:array!)
invoices mark_invoice_paid [propose] (invoiceId:string!, paidAt:string?)
invoices list_invoices [auto] (status:string?[draft|sent|paid|overdue|void], limit:number?)
invoices get_invoice_stats [auto] (no params)
library create_library_entry [propose] (kind:string![book|movie|series|comic], title:string!, creators:string?, year:number?, status:string?[planned|active|completed|paused|dropped], rating:number?, tags:string?, genres:string?)
library update_library_entry_status [propose] (entryId:string!, status:string![planned|active|completed|paused|dropped])
library rate_library_entry [propose] (entryId:string!, rating:number!)
library list_library_entries [auto] (kind:string?[book|movie|series|comic], status:string?[planned|active|completed|paused|dropped], limit:number?)
broadcast create_campaign_draft [propose] (name:string!, subject:string!, preheader:string?, htmlContent:string!)
broadcast list_campaigns [auto] (status:string?[draft|scheduled|sending|sent|cancelled], limit:number?)
broadcast get_campaign_stats [auto] (campaignId:string!)
website create_website [propose] (name:string!, slug:string!)
website apply_website_template [propose] (templateId:string![portfolio|personal-linktree|event|blank], name:string!, slug:string!)
website create_website_page [propose] (siteId:string!, path:string!, title:string!)
website add_website_block [propose] (pageId:string!, type:string![hero|richText|cta|image|gallery|faq|form|moduleEmbed|columns|spacer], props:object?, parentBlockId:string?, slotKey:string?)
website update_website_block [propose] (blockId:string!, patch:object!)
website publish_website [propose] (siteId:string!)
website list_websites [auto] (no params)
website list_website_pages [auto] (siteId:string!)
website list_website_blocks [auto] (pageId:string!)
writing list_drafts [auto] (kind:string?[blog|essay|email|social|story|letter|speech|cover-letter|product-description|press-release|bio|other], status:string?[draft|refining|complete|published], limit:number?)
writing get_draft [auto] (draftId:string!)
writing list_writing_styles [auto] (no params)
writing create_draft [propose] (kind:string![blog|essay|email|social|story|letter|speech|cover-letter|product-description|press-release|bio|other], title:string!, topic:string!, audience:string?, tone:string?, language:string?, targetWords:number?, styleId:string?, extraInstructions:string?)
writing generate_draft_content [propose] (draftId:string!)
writing refine_draft_selection [propose] (draftId:string!, operation:string![shorten|expand|tone|rewrite|translate], selectionStart:number!, selectionEnd:number!, targetTone:string?, instruction:string?, targetLanguage:string?)
writing set_draft_status [propose] (draftId:string!, status:string![draft|refining|complete|published])
writing save_draft_as_article [propose] (draftId:string!)
comic list_comic_stories [auto] (style:string?[comic|manga|cartoon|graphic-novel|webtoon], favoriteOnly:boolean?, limit:number?)
comic create_comic_story [propose] (title:string!, style:string![comic|manga|cartoon|graphic-novel|webtoon], description:string?, storyContext:string?, tags:string?)
comic generate_comic_panel [propose] (storyId:string!, panelPrompt:string!, caption:string?, dialogue:string?, quality:string?[low|medium|high], model:string?[openai/gpt-image-2|google/gemini-3-pro-image-preview|google/gemini-3.1-flash-image-preview])
comic list_comic_characters [auto] (style:string?[comic|manga|cartoon|graphic-novel|webtoon], favoriteOnly:boolean?, limit:number?)
comic create_comic_character [propose] (name:string!, style:string![comic|manga|cartoon|graphic-novel|webtoon], addPrompt:string?, description:string?, tags:string?)
comic generate_character_variant [propose] (characterId:string!, count:number?, quality:string?[low|medium|high], model:string?[openai/gpt-image-2|google/gemini-3-pro-image-preview|google/gemini-3.1-flash-image-preview])
comic pin_character_variant [propose] (characterId:string!, variantMediaId:string!)
augur capture_sign [propose] (kind:string![omen|fortune|hunch], source:string!, claim:string!, sourceCategory:string?[gut|tarot|horoscope|fortune-cookie|iching|dream|person|media|natural|other], vibe:string?[good|bad|mysterious], feltMeaning:string?, expectedOutcome:string?, expectedBy:string?, probability:number?, tags:string?)
augur resolve_sign [propose] (entryId:string!, outcome:string![fulfilled|partly|not-fulfilled], note:string?)
augur list_open_signs [auto] (kind:string?[omen|fortune|hunch], limit:number?)
augur consult_oracle [auto] (kind:string![omen|fortune|hunch], sourceCategory:string![gut|tarot|horoscope|fortune-cookie|iching|dream|person|media|natural|other], vibe:string![good|bad|mysterious], source:string?, claim:string?, tags:string?)
augur augur_year_recap [auto] (year:number?)
lasts create_last [propose] (title:string!, category:string?[culinary|adventure|travel|people|career|creative|nature|culture|health|tech|other], status:string?[suspected|confirmed], date:string?, confidence:string?[probably|likely|certain], meaning:string?, note:string?)
lasts confirm_last [propose] (lastId:string!, date:string?, meaning:string?, whatIKnewThen:string?, whatIKnowNow:string?, tenderness:number?, wouldReclaim:string?[no|maybe|yes])
lasts reclaim_last [propose] (lastId:string!, reclaimedNote:string?)
lasts list_lasts [auto] (status:string?[suspected|confirmed|reclaimed], category:string?[culinary|adventure|travel|people|career|creative|nature|culture|health|tech|other], limit:number?)
lasts suggest_lasts [auto] (no params)
"""

# SPEC §19 table: module -> (propose, auto), in module order.
MODULE_COUNTS = {
    "todo": (3, 2),
    "calendar": (1, 1),
    "notes": (4, 1),
    "places": (2, 2),
    "drink": (1, 2),
    "food": (0, 2),
    "news": (1, 0),
    "articles": (4, 2),
    "news-research": (1, 0),
    "journal": (1, 0),
    "habits": (2, 1),
    "myday": (0, 1),
    "goals": (4, 2),
    "contacts": (1, 1),
    "mood": (1, 2),
    "finance": (1, 2),
    "times": (2, 3),
    "wetter": (0, 2),
    "events": (1, 1),
    "quiz": (5, 3),
    "invoices": (2, 2),
    "library": (3, 1),
    "broadcast": (1, 2),
    "website": (6, 3),
    "writing": (5, 3),
    "comic": (5, 2),
    "augur": (2, 3),
    "lasts": (3, 2),
}


def _signature(tool: ToolSchema) -> str:
    if not tool.params:
        params = "no params"
    else:
        parts = []
        for p in tool.params:
            part = f"{p.name}:{p.type}{'!' if p.required else '?'}"
            if p.enum:
                part += "[" + "|".join(p.enum) + "]"
            parts.append(part)
        params = ", ".join(parts)
    return f"{tool.module} {tool.name} [{tool.default_policy}] ({params})"


def test_catalog_matches_spec_signatures_in_order() -> None:
    expected = GOLDEN.strip().splitlines()
    actual = [_signature(t) for t in CATALOG]
    assert actual == expected


def test_totals() -> None:
    assert len(CATALOG) == 110
    assert len(PROPOSABLE) == 62
    assert sum(1 for t in CATALOG if t.default_policy == "auto") == 48
    assert len(MODULES) == 28
    assert len({t.module for t in PROPOSABLE}) == 25


def test_counts_per_module_and_module_order() -> None:
    propose = Counter(t.module for t in CATALOG if t.default_policy == "propose")
    auto = Counter(t.module for t in CATALOG if t.default_policy == "auto")
    assert {m: (propose[m], auto[m]) for m in MODULES} == MODULE_COUNTS
    assert list(MODULES) == list(MODULE_COUNTS)


def test_modules_are_contiguous_blocks() -> None:
    # Module headings in §19 are in first-appearance order and each module's tools are adjacent.
    runs = [t.module for i, t in enumerate(CATALOG) if i == 0 or CATALOG[i - 1].module != t.module]
    assert runs == list(MODULES)


def test_names_unique_and_snake_case() -> None:
    names = [t.name for t in CATALOG]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[a-z_]+", n) for n in names)


def test_param_names_unique_per_tool() -> None:
    for tool in CATALOG:
        names = [p.name for p in tool.params]
        assert len(set(names)) == len(names), tool.name


@pytest.mark.parametrize("tool", CATALOG, ids=lambda t: t.name)
def test_tool_has_descriptions(tool: ToolSchema) -> None:
    assert tool.name.strip() and tool.module.strip() and tool.description.strip()
    assert tool.default_policy in ("auto", "propose")
    for param in tool.params:
        assert param.description.strip(), f"{tool.name}.{param.name}"
        assert param.type in ("string", "number", "boolean", "array", "object")
        if param.enum:
            assert param.type == "string"
            assert len(set(param.enum)) == len(param.enum)


def test_both_policies_present_and_sum_to_total() -> None:
    kinds = Counter(t.default_policy for t in CATALOG)
    assert kinds["auto"] > 0 and kinds["propose"] > 0
    assert kinds["auto"] + kinds["propose"] == len(CATALOG)


def test_by_name_map() -> None:
    assert len(CATALOG_BY_NAME) == len(CATALOG)
    assert all(CATALOG_BY_NAME[t.name] is t for t in CATALOG)
    with pytest.raises(TypeError):
        CATALOG_BY_NAME["x"] = CATALOG[0]  # type: ignore[index]


def test_proposable_derivation() -> None:
    assert [t.name for t in PROPOSABLE] == [t.name for t in CATALOG if t.default_policy == "propose"]
    assert PROPOSABLE_NAMES == {t.name for t in PROPOSABLE}
    assert "research_news" in PROPOSABLE_NAMES and "undo_drink" in PROPOSABLE_NAMES
    assert "log_drink" not in PROPOSABLE_NAMES
    assert "task" not in CATALOG_BY_NAME
